import type { ChainRecord } from '../protocol/records.js';
import { applyRecordToTasks, tasksToTrim, type TaskHistoryDict, type TaskView } from '../protocol/task-view.js';

/**
 * Builds a machine's `to_dict` view from its full record history, trimming to `maxTasks` after
 * every record by the daemon's own rule (tasksToTrim).
 */
export class TaskHistoryBuilder {
  private readonly tasks = new Map<string, TaskView>();

  constructor(private readonly maxTasks: number) {}

  add(record: ChainRecord): void {
    applyRecordToTasks(this.tasks, record);
    for (const task of tasksToTrim(this.tasks, this.maxTasks)) this.tasks.delete(task.task_id);
  }

  result(): TaskHistoryDict {
    const tasks = [...this.tasks.values()];
    return { tasks, count: tasks.length, max_tasks: this.maxTasks };
  }
}
