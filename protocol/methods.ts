import { z } from 'zod';
import { FINAL_STATUSES, STEP_STATUSES, TASK_MODES, type ChainPoint, type ChainRecord, type RecordType } from './records.js';
import { MAX_RECENT_COUNT } from './limits.js';
import type { TaskHistoryDict, TaskView } from './task-view.js';
import type { VerifyReport } from './chain-verify.js';

/**
 * Every daemon method as one descriptor: its wire name, its params schema and (as a type) its
 * result. Daemon and SDK both import these, so a renamed method or changed param breaks both at
 * compile time. Params are named (a JSON object); unknown keys are refused so typos surface.
 */
export interface MethodDescriptor<P extends z.ZodType, R> {
  name: string;
  params: P;
  /** Type-only: the result shape. */
  result?: R;
}

/** `method<Result>()(name, paramsSchema)`: curried so R is given and P is inferred. */
export function method<R>() {
  return <P extends z.ZodType>(name: string, params: P): MethodDescriptor<P, R> => ({ name, params });
}

const taskId = z.string().min(1).max(200);
const noParams = z.strictObject({});

/** Deeper plans are refused: every layer below costs a stack frame in redaction and hashing. */
export const MAX_PLAN_DEPTH = 64;

/** Whether a JSON value nests at most `max` arrays/objects deep (iterative: no stack to overflow). */
function nestsWithin(value: unknown, max: number): boolean {
  const pending: [unknown, number][] = [[value, 1]];
  while (pending.length) {
    const [item, depth] = pending.pop() as [unknown, number];
    if (item === null || typeof item !== 'object') continue;
    if (depth > max) return false;
    for (const member of Object.values(item)) pending.push([member, depth + 1]);
  }
  return true;
}

export const CreateTaskParams = z.strictObject({
  description: z.string().min(1, 'must be a non-empty string'),
  mode: z.enum(TASK_MODES),
  steps: z.array(z.unknown()).refine((steps) => nestsWithin(steps, MAX_PLAN_DEPTH), `must not nest deeper than ${MAX_PLAN_DEPTH} levels`),
  agent: z.string().max(200).optional(),
});

export const LogStepParams = z.strictObject({
  task_id: taskId,
  step_num: z.int().min(1),
  command: z.string(),
  status: z.enum(STEP_STATUSES),
  output: z.string().optional(),
  error: z.string().optional(),
  recovery: z.string().optional(),
  /** Unix seconds the step started at. */
  started_at: z.number().nonnegative().optional(),
  duration_ms: z.number().nonnegative().optional(),
  exit_code: z.int().optional(),
});

export const CompleteTaskParams = z.strictObject({ task_id: taskId, final_status: z.enum(FINAL_STATUSES) });

/** Smallest page a client may ask for: below it a page would be mostly framing. */
export const MIN_PAGE_BYTES = 1024;
/** A cursor is the daemon's own short token; anything longer is not one. */
const MAX_CURSOR_CHARS = 512;

/**
 * The paged forms of to_dict, get_recent and get_task: `cursor` null asks for the first page, a
 * page's `next_cursor` for the next one. `page_bytes` bounds each page (the daemon lowers it to its
 * own maximum); it means nothing without `cursor`, so it is refused there.
 */
const pageParams = {
  cursor: z.string().min(1).max(MAX_CURSOR_CHARS).nullable().optional(),
  page_bytes: z.int().min(MIN_PAGE_BYTES).optional(),
};
function pagedParams<Shape extends z.ZodRawShape>(shape: Shape) {
  return z.strictObject({ ...shape, ...pageParams }).refine((params) => {
    const { page_bytes, cursor } = params as { page_bytes?: number; cursor?: string | null };
    return page_bytes === undefined || cursor !== undefined;
  }, {
    path: ['page_bytes'],
    message: 'is only for the paged form: pass cursor too (null for the first page)',
  });
}

export const ToDictParams = pagedParams({});
export const GetTaskParams = pagedParams({ task_id: taskId });
export const GetRecentParams = pagedParams({ count: z.int().min(1).max(MAX_RECENT_COUNT).optional() });
export const SubscribeParams = z.strictObject({ task_id: taskId.optional() });
export const UnsubscribeParams = z.strictObject({ subscription: z.string() });

export type CreateTaskInput = z.infer<typeof CreateTaskParams>;
export type LogStepInput = z.infer<typeof LogStepParams>;
export type CompleteTaskInput = z.infer<typeof CompleteTaskParams>;

export interface CloudStatus {
  /** `refused_ack`: the cloud acknowledged records it was not sent (or with another hash); nothing was marked stored. */
  state: 'disabled' | 'connecting' | 'online' | 'offline' | 'auth_failed' | 'fork' | 'refused_ack';
  url: string | null;
  /** Committed records the cloud has not acknowledged yet. */
  queued: number;
  acked_seq: number;
  /** Age of the oldest unacknowledged record, 0 when nothing is queued. */
  lag_ms: number;
  last_error: string | null;
  next_retry_at: string | null;
  /** What start-up restore did, when it ran. */
  restore: string | null;
}

export interface RunningTask {
  task_id: string;
  description: string;
  agent?: string;
  steps: number;
  age_s: number;
}

export interface StatusResult {
  version: string;
  pid: number;
  machine_id: string;
  socket: string;
  data_file: string;
  tasks: number;
  running_tasks: number;
  running: RunningTask[];
  max_tasks: number;
  last_seq: number;
  head_hash: string;
  /** Who asked (uid null when attribution is off), whether it sees every task or only its own, and its counts. */
  caller: { uid: number | null; sees: 'all' | 'own'; tasks: number; running_tasks: number };
  checkpoint_seq: number;
  uptime_s: number;
  redaction: boolean;
  /** The last journal write failure while writes keep failing (disk full...), else null. */
  storage_error: string | null;
  tamper: { count: number; last: { seq: number; ts: number; reason: string; evidence_file?: string } | null };
  cloud: CloudStatus;
}

/**
 * A page of a paged answer. A task too large for one page is split: consecutive entries with the
 * same task_id are fragments of one task (same head), to be joined by concatenating their steps.
 */
export interface TaskPage {
  tasks: TaskView[];
  /** Ask for the next page with this; null on the last page. */
  next_cursor: string | null;
}

/** A page of to_dict: `count` is the number of tasks in the snapshot the pages show. */
export interface TaskDictPage extends TaskPage {
  count: number;
  max_tasks: number;
}

export interface RedactionRuleInfo {
  name: string;
  description: string;
  source: 'builtin' | 'config';
}

export const Methods = {
  createTask: method<{ task_id: string; seq: number }>()('create_task', CreateTaskParams),
  logStep: method<{ seq: number }>()('log_step', LogStepParams),
  completeTask: method<{ seq: number }>()('complete_task', CompleteTaskParams),
  /** One-shot without `cursor`, a TaskPage with it. */
  getTask: method<TaskView | TaskPage>()('get_task', GetTaskParams),
  getRecent: method<TaskView[] | TaskPage>()('get_recent', GetRecentParams),
  toDict: method<TaskHistoryDict | TaskDictPage>()('to_dict', ToDictParams),
  status: method<StatusResult>()('status', noParams),
  subscribe: method<{ subscription: string }>()('subscribe', SubscribeParams),
  unsubscribe: method<{ unsubscribed: boolean }>()('unsubscribe', UnsubscribeParams),
  verify: method<VerifyReport>()('verify', noParams),
  redactionRules: method<{ enabled: boolean; rules: RedactionRuleInfo[] }>()('redaction_rules', noParams),
} as const;

export type MethodKey = keyof typeof Methods;
export type ParamsOf<K extends MethodKey> = z.input<(typeof Methods)[K]['params']>;
export type ResultOf<K extends MethodKey> = NonNullable<(typeof Methods)[K]['result']>;

/** The notification the daemon sends a subscriber for every committed record, in commit order. */
export const EVENT_NOTIFICATION = 'event';
export interface EventParams {
  subscription: string;
  type: RecordType;
  task_id: string | null;
  seq: number;
  hash: string;
  ts: number;
  record: ChainRecord;
}

export type { ChainPoint };
