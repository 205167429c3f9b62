import type { TaskEntry, TaskSource } from './task-source.js';
import type { Viewer } from './task-access.js';

/**
 * The tasks one caller may see, over the whole store's TaskSource: the pager reads through it, so
 * to_dict, get_recent and get_task (one-shot or paged) show nothing else, and a task the caller
 * may not see is absent exactly as a task that does not exist.
 */
export class VisibleTaskSource implements TaskSource {
  constructor(
    private readonly source: TaskSource,
    private readonly viewer: Viewer,
  ) {}

  get headSeq(): number {
    return this.source.headSeq;
  }

  get count(): number {
    let visible = 0;
    for (const _ of this.tasksInOrder(0)) visible++;
    return visible;
  }

  *tasksInOrder(afterTaskSeq: number): Iterable<TaskEntry> {
    for (const entry of this.source.tasksInOrder(afterTaskSeq)) if (this.viewer.sees(entry.creatorUid)) yield entry;
  }

  task(taskId: string): TaskEntry | undefined {
    const entry = this.source.task(taskId);
    return entry && this.viewer.sees(entry.creatorUid) ? entry : undefined;
  }
}
