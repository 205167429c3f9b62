import { stepViewOf } from './data-file-v2.js';
import type { ChainRecord, FinalStatus, StepStatus, TaskMode, Writer } from './records.js';

/**
 * The original model's task dict. Keys and meanings are the compatibility contract; `agent`, `plan`
 * and `seq` (of the creating record) are extras. Optional step keys are left out when not given.
 */
export interface StepView {
  step: number;
  command: string;
  status: StepStatus;
  timestamp: number;
  output?: string;
  error?: string;
  recovery?: string;
  started_at?: number;
  duration_ms?: number;
  exit_code?: number;
  writer?: Writer;
  seq: number;
}

export interface TaskView {
  task_id: string;
  timestamp: number;
  description: string;
  mode: TaskMode;
  planned_steps: number;
  steps: StepView[];
  status: 'running' | FinalStatus;
  machine_id: string;
  agent?: string;
  plan: unknown[];
  seq: number;
  writer?: Writer;
  completed_at?: number;
  /** Seq of the completing record. */
  completed_seq?: number;
}

/** The top level of task_history.json and the result of `to_dict`: the original's shape. */
export interface TaskHistoryDict {
  tasks: TaskView[];
  count: number;
  max_tasks: number;
}

/**
 * Applies one record to a task map (insertion order = creation order). Returns the task it changed,
 * or undefined for records that are not about a task. The caller has validated the record.
 */
export function applyRecordToTasks(tasks: Map<string, TaskView>, record: ChainRecord): TaskView | undefined {
  switch (record.type) {
    case 'task_created': {
      const task: TaskView = {
        task_id: record.task_id,
        timestamp: record.ts,
        description: record.description,
        mode: record.mode,
        planned_steps: record.plan.length,
        steps: [],
        status: 'running',
        machine_id: record.machine_id,
        ...(record.agent !== undefined && { agent: record.agent }),
        plan: record.plan,
        seq: record.seq,
        ...(record.writer !== undefined && { writer: record.writer }),
      };
      tasks.set(task.task_id, task);
      return task;
    }
    case 'step_logged': {
      const task = tasks.get(record.task_id);
      if (!task) return undefined;
      task.steps.push(stepViewOf(record));
      return task;
    }
    case 'task_completed': {
      const task = tasks.get(record.task_id);
      if (!task) return undefined;
      task.status = record.final_status;
      task.completed_at = record.ts;
      task.completed_seq = record.seq;
      return task;
    }
    default:
      return undefined;
  }
}

/** The tasks the given records describe, in creation order. */
export function tasksFromRecords(records: Iterable<ChainRecord>): Map<string, TaskView> {
  const tasks = new Map<string, TaskView>();
  for (const record of records) applyRecordToTasks(tasks, record);
  return tasks;
}

/**
 * The tasks `max_tasks` drops: beyond `maxTasks`, the oldest finished tasks first; a running task
 * never, nor one `held` keeps (the daemon holds tasks the cloud has not acknowledged). The daemon
 * and the cloud's view apply this after every record, so both keep the same tasks.
 */
export function tasksToTrim<T extends Pick<TaskView, 'status'>>(
  tasks: ReadonlyMap<string, T>,
  maxTasks: number,
  held: (task: T) => boolean = () => false,
  // The finished tasks in creation order, when the caller keeps them apart: running ones then cost nothing.
  candidates: Iterable<T> = tasks.values(),
): T[] {
  let excess = tasks.size - maxTasks;
  const dropped: T[] = [];
  for (const task of candidates) {
    if (excess <= 0) break;
    if (task.status === 'running' || held(task)) continue;
    dropped.push(task);
    excess--;
  }
  return dropped;
}
