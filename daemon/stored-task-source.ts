import type { StepView, TaskView } from '../protocol/task-view.js';
import type { SeqListView } from './seq-list.js';
import type { ChainState, TaskMeta } from './chain-state.js';
import type { TaskStore } from './store.js';
import type { TaskEntry, TaskSource } from './task-source.js';

/** What a task head adds to its creating record's stored line: status, completion, view keys. */
const HEAD_OVERHEAD_BYTES = 256;

class StoredTaskEntry implements TaskEntry {
  /** Measured once, when a page first sizes this task's steps. */
  private writerBytes: number | undefined;

  constructor(
    private readonly chain: ChainState,
    private readonly task: TaskMeta,
  ) {}

  get task_id(): string {
    return this.task.task_id;
  }

  get seq(): number {
    return this.task.seq;
  }

  get creatorUid(): number | undefined {
    return this.task.writer?.uid;
  }

  get stepSeqs(): SeqListView {
    return this.task.stepSeqs;
  }

  get completedSeq(): number | undefined {
    return this.task.completedSeq;
  }

  headAsOf(asOfSeq: number): Omit<TaskView, 'steps'> {
    const { steps: _steps, ...head } = this.chain.taskHead(this.task, asOfSeq);
    return head;
  }

  headBytes(): number {
    return this.chain.index.lengthOf(this.task.seq) + HEAD_OVERHEAD_BYTES;
  }

  /**
   * The stored line's length: a step view line, or a journal line (larger than its view: a safe
   * estimate), plus the task's writer, which a step view line may name as TASK_WRITER.
   */
  stepBytes(index: number): number {
    this.writerBytes ??= this.task.writer ? Buffer.byteLength(JSON.stringify(this.task.writer)) : 0;
    return this.chain.index.lengthOf(this.task.stepSeqs.at(index)) + this.writerBytes;
  }

  steps(from: number, to: number): StepView[] {
    return this.task.stepSeqs.slice(from, to).map((seq) => this.chain.stepView(seq));
  }
}

/** The pager's TaskSource over the engine's index: heads and steps are read from disk page by page. */
export class StoredTaskSource implements TaskSource {
  /** TaskStore.chain applies any durable group not applied yet before it returns. */
  constructor(private readonly store: Pick<TaskStore, 'chain'>) {}

  get headSeq(): number {
    return this.store.chain.head.seq;
  }

  get count(): number {
    return this.store.chain.tasks.size;
  }

  *tasksInOrder(afterTaskSeq: number): Iterable<TaskEntry> {
    const chain = this.store.chain;
    for (const task of chain.tasks.values()) if (task.seq > afterTaskSeq) yield new StoredTaskEntry(chain, task);
  }

  task(taskId: string): TaskEntry | undefined {
    const chain = this.store.chain;
    const task = chain.tasks.get(taskId);
    return task && new StoredTaskEntry(chain, task);
  }
}
