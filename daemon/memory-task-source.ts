import { ErrorCodes, RpcError } from '../protocol/errors.js';
import type { StepView, TaskView } from '../protocol/task-view.js';
import type { TaskStore } from './store.js';
import type { TaskEntry, TaskSource } from './task-source.js';

const utf8Bytes = (value: unknown): number => Buffer.byteLength(JSON.stringify(value));

/**
 * Step seqs and JSON sizes of one task's steps, grown as steps are appended (steps are never
 * changed or removed while the task is kept), so each step is measured once.
 */
class StepIndex {
  readonly seqs: number[] = [];
  readonly bytes: number[] = [];

  constructor(private readonly steps: readonly StepView[]) {}

  seqsNow(): readonly number[] {
    for (let index = this.seqs.length; index < this.steps.length; index++) this.seqs.push(this.steps[index].seq);
    return this.seqs;
  }

  bytesOf(index: number): number {
    for (let next = this.bytes.length; next <= index; next++) this.bytes.push(utf8Bytes(this.steps[next]));
    return this.bytes[index];
  }
}

class MemoryTaskEntry implements TaskEntry {
  constructor(
    private readonly task: TaskView,
    private readonly index: StepIndex,
  ) {}

  get task_id(): string {
    return this.task.task_id;
  }

  get seq(): number {
    return this.task.seq;
  }

  get stepSeqs(): readonly number[] {
    return this.index.seqsNow();
  }

  get completedSeq(): number | undefined {
    return this.task.completed_seq;
  }

  headAsOf(asOfSeq: number): Omit<TaskView, 'steps'> {
    const { steps: _steps, ...head } = this.task;
    if (head.completed_seq === undefined || head.completed_seq <= asOfSeq) return head;
    const { completed_at: _at, completed_seq: _seq, ...running } = head;
    return { ...running, status: 'running' };
  }

  headBytes(asOfSeq: number): number {
    return utf8Bytes(this.headAsOf(asOfSeq));
  }

  stepBytes(index: number): number {
    return this.index.bytesOf(index);
  }

  steps(from: number, to: number): StepView[] {
    return this.task.steps.slice(from, to);
  }
}

/** The pager's TaskSource over today's TaskStore, which holds every task view (outputs included) in memory. */
export class MemoryTaskSource implements TaskSource {
  private readonly indexes = new WeakMap<TaskView, StepIndex>();

  constructor(private readonly store: Pick<TaskStore, 'head' | 'tasks' | 'getTask'>) {}

  get headSeq(): number {
    return this.store.head.seq;
  }

  get count(): number {
    return this.store.tasks.length;
  }

  *tasksInOrder(afterTaskSeq: number): Iterable<TaskEntry> {
    const tasks = this.store.tasks;
    for (let index = firstCreatedAfter(tasks, afterTaskSeq); index < tasks.length; index++) yield this.entry(tasks[index]);
  }

  task(taskId: string): TaskEntry | undefined {
    try {
      return this.entry(this.store.getTask(taskId));
    } catch (error) {
      if (error instanceof RpcError && error.code === ErrorCodes.TaskNotFound) return undefined;
      throw error;
    }
  }

  private entry(task: TaskView): TaskEntry {
    let index = this.indexes.get(task);
    if (!index) this.indexes.set(task, (index = new StepIndex(task.steps)));
    return new MemoryTaskEntry(task, index);
  }
}

/** Index of the first task created after `seq` (tasks are in creation order, so seqs ascend). */
function firstCreatedAfter(tasks: readonly TaskView[], seq: number): number {
  let low = 0;
  let high = tasks.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (tasks[middle].seq <= seq) low = middle + 1;
    else high = middle;
  }
  return low;
}
