import type { ChainRecord } from '../protocol/records.js';
import { applyRecordToTasks, type TaskHistoryDict, type TaskView } from '../protocol/task-view.js';

/**
 * Builds a machine's `to_dict` view from its full record history, trimming to `maxTasks` as the
 * daemon does while it runs: after every record, while there are more than `maxTasks` tasks, the
 * oldest finished task is dropped; running tasks are never dropped.
 */
export class TaskHistoryBuilder {
  private readonly tasks = new Map<string, TaskView>();

  constructor(private readonly maxTasks: number) {}

  add(record: ChainRecord): void {
    applyRecordToTasks(this.tasks, record);
    if (this.tasks.size > this.maxTasks) this.trim();
  }

  result(): TaskHistoryDict {
    const tasks = [...this.tasks.values()];
    return { tasks, count: tasks.length, max_tasks: this.maxTasks };
  }

  private trim(): void {
    for (const [taskId, task] of this.tasks) {
      if (this.tasks.size <= this.maxTasks) return;
      if (task.status !== 'running') this.tasks.delete(taskId);
    }
  }
}
