import type { FleetTaskSummary, StepSummary } from '../protocol/fleet-api.js';
import type { ChainRecord, FinalStatus, StepLoggedRecord } from '../protocol/records.js';
import { applyRecordToTasks } from '../protocol/task-view.js';

/**
 * Task-level facts a batch of records changes, as both backends keep them: a task created in the
 * batch arrives whole (its steps and completion folded in); a task created earlier gets steps
 * appended and maybe its completion. Steps carry no large fields: lists stay small.
 */
export interface TaskChange {
  taskId: string;
  created?: FleetTaskSummary;
  /** Steps (and their commands, for search) logged in the batch for a task created before it. */
  steps: StepSummary[];
  completion?: { status: FinalStatus; completed_at: number; completed_seq: number };
}

export function taskChangesOf(machineId: string, records: ChainRecord[]): TaskChange[] {
  const changes = new Map<string, TaskChange>();
  const changeOf = (taskId: string) => {
    let change = changes.get(taskId);
    if (!change) changes.set(taskId, (change = { taskId, steps: [] }));
    return change;
  };
  for (const record of records) {
    switch (record.type) {
      case 'task_created': {
        const task = applyRecordToTasks(new Map(), record) as FleetTaskSummary;
        // The machine that pushed, whatever the record says: the fleet is keyed by it.
        changes.set(record.task_id, { taskId: record.task_id, created: { ...task, machine_id: machineId }, steps: [] });
        break;
      }
      case 'step_logged': {
        const change = changeOf(record.task_id);
        (change.created?.steps ?? change.steps).push(stepSummaryOf(record));
        break;
      }
      case 'task_completed': {
        const change = changeOf(record.task_id);
        const completion = { status: record.final_status, completed_at: record.ts, completed_seq: record.seq };
        if (change.created) Object.assign(change.created, completion);
        else change.completion = completion;
        break;
      }
      default:
        break;
    }
  }
  return [...changes.values()];
}

/** The step as get_task shows it (same keys, same order), without output, error and recovery. */
export function stepSummaryOf(record: StepLoggedRecord): StepSummary {
  const step = { step: record.step, command: record.command, status: record.status, timestamp: record.ts } as StepSummary;
  if (record.started_at !== undefined) step.started_at = record.started_at;
  if (record.duration_ms !== undefined) step.duration_ms = record.duration_ms;
  if (record.exit_code !== undefined) step.exit_code = record.exit_code;
  step.seq = record.seq;
  return step;
}

/** What a `q` search matches: the description and every step's command. */
export function searchTextOf(description: string, steps: StepSummary[]): string {
  return [description, ...steps.map((step) => step.command)].join('\n');
}
