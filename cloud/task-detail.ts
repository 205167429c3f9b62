import type { ChainLink, FleetTaskDetail } from '../protocol/fleet-api.js';
import type { ChainRecord } from '../protocol/records.js';
import { applyRecordToTasks, type TaskView } from '../protocol/task-view.js';

/**
 * One task as the fleet API answers it, from its machine's records in seq order (both backends
 * read them as stored): the daemon's task view plus each of its records' seq, hash and prev_hash.
 */
export function taskDetailOf(machineId: string, taskId: string, records: Iterable<ChainRecord>): FleetTaskDetail | null {
  const tasks = new Map<string, TaskView>();
  const chain: ChainLink[] = [];
  for (const record of records) {
    if (applyRecordToTasks(tasks, record)?.task_id !== taskId) continue;
    chain.push({ seq: record.seq, type: record.type as ChainLink['type'], hash: record.hash, prev_hash: record.prev_hash });
  }
  const task = tasks.get(taskId);
  // The machine that pushed, whatever the record says: the fleet is keyed by it.
  return task ? { ...task, machine_id: machineId, chain } : null;
}
