import type { StepView, TaskView } from '../protocol/task-view.js';
import type { SeqListView } from './seq-list.js';

/**
 * What the pager (task-pages.ts) needs of the store: the kept tasks in creation order and, per task,
 * its head and where its steps are, without their content. The storage engine implements it over
 * its index (stored-task-source.ts: step views read from disk on demand).
 */
export interface TaskSource {
  /** Seq of the newest durable record. */
  readonly headSeq: number;
  /** Kept tasks in creation order whose creating record's seq is > afterTaskSeq. */
  tasksInOrder(afterTaskSeq: number): Iterable<TaskEntry>;
  task(taskId: string): TaskEntry | undefined;
  /** Kept tasks. */
  readonly count: number;
}

/**
 * Byte estimates size pages and decide when a one-shot answer is refused: they may be rough (a page
 * is half the message limit) but should not undercount by much, or an answer could pass the limit.
 */
export interface TaskEntry {
  readonly task_id: string;
  /** The creating record's seq. */
  readonly seq: number;
  /** Uid of the creating record's writer (who may see the task); undefined when it names none. */
  readonly creatorUid: number | undefined;
  /** Seqs of the kept steps, ascending. */
  readonly stepSeqs: SeqListView;
  readonly completedSeq: number | undefined;
  /** The task without its steps as of `asOfSeq`: status `running` (no completed_at) when it completed after it. */
  headAsOf(asOfSeq: number): Omit<TaskView, 'steps'>;
  /** Estimated UTF-8 bytes of JSON.stringify(headAsOf(asOfSeq)). */
  headBytes(asOfSeq: number): number;
  /** Estimated UTF-8 bytes of the JSON of step view #index. */
  stepBytes(index: number): number;
  /** Step views [from, to). */
  steps(from: number, to: number): StepView[];
}
