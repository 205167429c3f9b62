import { z } from 'zod';
import { FINAL_STATUSES } from './records.js';
import type { StepView, TaskView } from './task-view.js';

/**
 * The fleet HTTP API: read-only JSON over GET, the token in `Authorization: Bearer <token>` (admin or
 * viewer read every machine; a machine token reads its own). Pure: the web console imports it.
 * Lists are newest first and paged: pass `next_cursor` back as `cursor` until it is null.
 */
export const FleetPaths = {
  machines: '/v1/machines',
  tasks: '/v1/tasks',
  task: (machineId: string, taskId: string) => `/v1/machines/${encodeURIComponent(machineId)}/tasks/${encodeURIComponent(taskId)}`,
  incidents: '/v1/incidents',
  /** Server-sent events, one `stored` event per acknowledged push: {machine_id, first_seq, last_seq}. */
  events: '/v1/events',
  healthz: '/healthz',
  readyz: '/readyz',
  metrics: '/metrics',
} as const;

export const FLEET_PAGE_DEFAULT = 50;
export const FLEET_PAGE_MAX = 500;
export const TASK_STATUSES = ['running', ...FINAL_STATUSES] as const;
export type TaskStatus = (typeof TASK_STATUSES)[number];

export interface FleetMachine {
  machine_id: string;
  acked_seq: number;
  head_hash: string | null;
  /** ISO 8601 time of the last push that stored records; null if none did since the endpoint kept it. */
  last_push_at: string | null;
  tasks: number;
  running: number;
  incidents: number;
}

/** A step in a task list: the large fields (output, error, recovery) are left out. */
export type StepSummary = Omit<StepView, 'output' | 'error' | 'recovery' | 'writer'>;

/** A task in a list: the daemon's `get_task` keys, its steps without their large fields. */
export type FleetTaskSummary = Omit<TaskView, 'steps'> & { steps: StepSummary[] };

export interface Incident {
  machine_id: string;
  seq: number;
  reason: 'gap' | 'fork' | 'altered';
  detail: string;
  /** ISO 8601 time the batch was refused. */
  at: string;
}

export interface MachinesPage {
  machines: FleetMachine[];
  next_cursor: string | null;
}
export interface TasksPage {
  tasks: FleetTaskSummary[];
  next_cursor: string | null;
}
export interface IncidentsPage {
  incidents: Incident[];
  next_cursor: string | null;
}
/** A record's place in its machine's chain: a client can check each link against a pull or the daemon's journal. */
export interface ChainLink {
  seq: number;
  type: 'task_created' | 'step_logged' | 'task_completed';
  hash: string;
  prev_hash: string;
}

/**
 * GET /v1/machines/<machine_id>/tasks/<task_id>: every step with its large fields, and `chain`: the
 * link of every record the task is built from (its creation, each step, its completion), in seq order.
 */
export type FleetTaskDetail = TaskView & { chain: ChainLink[] };

/** The body of every 4xx/5xx answer; `parameter` names the query parameter at fault. */
export interface FleetError {
  error: string;
  parameter?: string;
}

/** A time: Unix seconds (as records' `ts`) or an ISO 8601 date-time; parsed to Unix seconds. */
const time = z.string().transform((text, context) => {
  const seconds = /^\d+(\.\d+)?$/.test(text) ? Number(text) : Date.parse(text) / 1000;
  if (!Number.isFinite(seconds)) {
    context.addIssue({ code: 'custom', message: 'expected Unix seconds or an ISO 8601 date-time' });
    return z.NEVER;
  }
  return seconds;
});
const limit = z
  .string()
  .regex(/^\d+$/, 'expected a positive integer')
  .transform(Number)
  .pipe(z.int().min(1).max(FLEET_PAGE_MAX))
  .default(FLEET_PAGE_DEFAULT);
const cursor = z.string().min(1).max(1000);
const machine = z.string().min(1).max(200);

/** Query parameters, as strings from the URL; unknown parameters are refused. */
export const MachinesQuery = z.strictObject({ limit, cursor: cursor.optional() });
export const TasksQuery = z.strictObject({
  machine: machine.optional(),
  agent: z.string().min(1).max(200).optional(),
  status: z.enum(TASK_STATUSES).optional(),
  since: time.optional(),
  until: time.optional(),
  /** Case-insensitive substring of the description or of any step's command. */
  q: z.string().min(1).max(200).optional(),
  limit,
  cursor: cursor.optional(),
});
export const IncidentsQuery = z.strictObject({ machine: machine.optional(), since: time.optional(), limit, cursor: cursor.optional() });
export type MachinesQuery = z.output<typeof MachinesQuery>;
export type TasksQuery = z.output<typeof TasksQuery>;
export type IncidentsQuery = z.output<typeof IncidentsQuery>;

/** A live-feed event: a push stored seqs first_seq..last_seq of the machine. */
export interface StoredEvent {
  machine_id: string;
  first_seq: number;
  last_seq: number;
}
