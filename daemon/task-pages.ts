import { ErrorCodes, RpcError } from '../protocol/errors.js';
import type { TaskDictPage, TaskPage } from '../protocol/methods.js';
import { taskWithSteps } from '../protocol/task-fragments.js';
import type { TaskHistoryDict, TaskView } from '../protocol/task-view.js';
import { decodeCursor, encodeCursor, invalidCursor, type PagedMethod, type Snapshot } from './page-cursor.js';
import type { TaskEntry, TaskSource } from './task-source.js';

/** Room kept for the JSON-RPC envelope around a result (`{"jsonrpc":"2.0","id":…,"result":…}`) and a line's newline. */
export const ANSWER_ENVELOPE_BYTES = 1024;
/** What a page holds besides its tasks: `{"tasks":[],"count":…,"max_tasks":…,"next_cursor":"…"}`. */
const PAGE_FRAME_BYTES = 256;
/** A task's JSON is its head's plus this (`,"steps":[]`), its steps and the commas between them. */
const STEPS_KEY_BYTES = ',"steps":[]'.length;

export interface PagerOptions {
  maxMessageBytes: number;
  maxTasks(): number;
}

interface PageParams {
  cursor?: string | null;
  page_bytes?: number;
}

/** The next task to show: the one created at `taskSeq` (or the next kept one), from its step `step`. */
interface Position {
  taskSeq: number;
  step: number;
}

interface Filled {
  tasks: TaskView[];
  next: Position | null;
  bytes: number;
}

/**
 * Answers to_dict, get_recent and get_task without ever building an answer larger than
 * --max-message-bytes. The one-shot form is sized first from the source's byte estimates and
 * refused (1008, naming the paged form) when too large. The paged form walks the log as of the
 * seq its first page fixed, a page at most `page_bytes` (default and maximum: half the message
 * limit), splitting a task too large for a page between pages.
 */
export class TaskPager {
  /** Default and largest page. */
  readonly maxPageBytes: number;
  private readonly answerLimit: number;

  constructor(
    private readonly source: TaskSource,
    private readonly options: PagerOptions,
  ) {
    this.maxPageBytes = Math.floor(options.maxMessageBytes / 2);
    this.answerLimit = options.maxMessageBytes - ANSWER_ENVELOPE_BYTES;
  }

  toDict(params: PageParams): TaskHistoryDict | TaskDictPage {
    const maxTasks = this.options.maxTasks();
    if (params.cursor === undefined) {
      const entries = [...this.source.tasksInOrder(0)];
      const frame = JSON.stringify({ tasks: [], count: entries.length, max_tasks: maxTasks }).length;
      this.refuseOversize('to_dict', frame + listBytes(entries, this.source.headSeq));
      return { tasks: wholeTasks(entries, this.source.headSeq), count: entries.length, max_tasks: maxTasks };
    }
    // The snapshot's task count is fixed by the first page, so every page says the same.
    const { snapshot, start } = this.startOf('to_dict', params.cursor, (headSeq) => ({
      start: { taskSeq: 0, step: 0 },
      count: this.source.count - sizeOf(this.source.tasksInOrder(headSeq)),
    }));
    const page = this.page('to_dict', snapshot, start && this.source.tasksInOrder(start.taskSeq - 1), start, params.page_bytes);
    return { tasks: page.tasks, count: snapshot.count as number, max_tasks: maxTasks, next_cursor: page.next_cursor };
  }

  recent(params: PageParams & { count: number }): TaskView[] | TaskPage {
    if (params.cursor === undefined) {
      const headSeq = this.source.headSeq;
      const first = newestTaskSeqs(this.source, headSeq, params.count)[0];
      const entries = first === undefined ? [] : [...this.source.tasksInOrder(first - 1)];
      this.refuseOversize('get_recent', 2 + listBytes(entries, headSeq));
      return wholeTasks(entries, headSeq);
    }
    const { snapshot, start } = this.startOf('get_recent', params.cursor, (headSeq) => {
      const first = newestTaskSeqs(this.source, headSeq, params.count)[0];
      return { start: first === undefined ? null : { taskSeq: first, step: 0 } };
    });
    return this.page('get_recent', snapshot, start && this.source.tasksInOrder(start.taskSeq - 1), start, params.page_bytes);
  }

  task(params: PageParams & { task_id: string }): TaskView | TaskPage {
    const entry = this.source.task(params.task_id);
    if (!entry) throw new RpcError(ErrorCodes.TaskNotFound, `no task ${params.task_id}`, { task_id: params.task_id });
    if (params.cursor === undefined) {
      const headSeq = this.source.headSeq;
      this.refuseOversize('get_task', taskBytes(entry, headSeq, 0, stepsAsOf(entry, headSeq)));
      return wholeTasks([entry], headSeq)[0];
    }
    const { snapshot, start } = this.startOf('get_task', params.cursor, () => ({ start: { taskSeq: entry.seq, step: 0 } }));
    if (start && start.taskSeq !== entry.seq) {
      throw invalidCursor(`is a cursor of another task than ${params.task_id}`);
    }
    return this.page('get_task', snapshot, [entry], start, params.page_bytes);
  }

  /** The snapshot and position a page starts at: fixed now for the first page (null cursor), else read from the cursor. */
  private startOf(
    method: PagedMethod,
    cursor: string | null,
    first: (headSeq: number) => { start: Position | null; count?: number },
  ): { snapshot: Snapshot; start: Position | null } {
    if (cursor === null) {
      const headSeq = this.source.headSeq;
      const { start, count } = first(headSeq);
      return { snapshot: { asOfSeq: headSeq, ...(count !== undefined && { count }) }, start };
    }
    const { method: _method, taskSeq, step, ...snapshot } = decodeCursor(cursor, method, this.source.headSeq);
    return { snapshot, start: { taskSeq, step } };
  }

  private page(method: PagedMethod, snapshot: Snapshot, entries: Iterable<TaskEntry> | null, start: Position | null, pageBytes: number | undefined): TaskPage {
    const budget = Math.min(pageBytes ?? this.maxPageBytes, this.maxPageBytes) - PAGE_FRAME_BYTES;
    const filled = entries && start ? fillPage(entries, start, snapshot.asOfSeq, budget) : { tasks: [], next: null, bytes: 0 };
    if (filled.bytes + PAGE_FRAME_BYTES > this.answerLimit) {
      // Only a single step (or head) larger than the message limit gets here: it went out alone and still does not fit.
      const task = filled.tasks[0];
      throw new RpcError(
        ErrorCodes.AnswerTooLarge,
        `task ${task.task_id} holds a step (or plan) larger than --max-message-bytes ${this.options.maxMessageBytes} allows in one message; restart the daemon with a larger --max-message-bytes to read it`,
        { limit: this.options.maxMessageBytes, estimated_bytes: filled.bytes + PAGE_FRAME_BYTES, task_id: task.task_id },
      );
    }
    const next_cursor = filled.next && encodeCursor({ method, ...snapshot, ...filled.next });
    return { tasks: filled.tasks, next_cursor };
  }

  private refuseOversize(method: PagedMethod, estimatedBytes: number): void {
    if (estimatedBytes <= this.answerLimit) return;
    const pagedForm = `${method} with {"cursor": null}`;
    throw new RpcError(
      ErrorCodes.AnswerTooLarge,
      `${method}'s answer would be about ${estimatedBytes} bytes, more than --max-message-bytes ${this.options.maxMessageBytes} allows in one message; ask for it in pages: ${pagedForm}, then each page's next_cursor`,
      { limit: this.options.maxMessageBytes, estimated_bytes: estimatedBytes, paged_form: pagedForm },
    );
  }
}

/**
 * Fills one page from `entries` (creation order) as of `asOfSeq`, starting at `start`. A task that
 * does not fit what is left of the page starts the next one, unless it is larger than a page: then
 * it is split, here and on the pages after. A page always shows something: a step larger than the
 * page goes out alone.
 */
function fillPage(entries: Iterable<TaskEntry>, start: Position, asOfSeq: number, budget: number): Filled {
  const tasks: TaskView[] = [];
  let used = 0;
  for (const entry of entries) {
    if (entry.seq > asOfSeq) break; // created after the snapshot, as is every later one
    const stepCount = stepsAsOf(entry, asOfSeq);
    const from = entry.seq === start.taskSeq ? Math.min(start.step, stepCount) : 0;
    let bytes = entry.headBytes(asOfSeq) + STEPS_KEY_BYTES + (tasks.length > 0 ? 1 : 0);
    let to = from;
    for (; to < stepCount; to++) {
      const stepBytes = entry.stepBytes(to) + (to > from ? 1 : 0);
      if (used + bytes + stepBytes > budget) break;
      bytes += stepBytes;
    }
    const fits = to === stepCount && used + bytes <= budget;
    if (tasks.length > 0 && !fits && (to === from || fitsAPage(entry, asOfSeq, from, stepCount, budget))) {
      return { tasks, next: { taskSeq: entry.seq, step: from }, bytes: used };
    }
    if (to === from && from < stepCount) bytes += entry.stepBytes(to++); // alone on its page
    tasks.push(taskWithSteps(entry.headAsOf(asOfSeq), entry.steps(from, to)));
    used += bytes;
    if (to < stepCount) return { tasks, next: { taskSeq: entry.seq, step: to }, bytes: used };
  }
  return { tasks, next: null, bytes: used };
}

/** Whether the task from step `from` on would fit a page of its own (summed only until it would not). */
function fitsAPage(entry: TaskEntry, asOfSeq: number, from: number, to: number, budget: number): boolean {
  let bytes = entry.headBytes(asOfSeq) + STEPS_KEY_BYTES;
  for (let index = from; index < to && bytes <= budget; index++) bytes += entry.stepBytes(index) + (index > from ? 1 : 0);
  return bytes <= budget;
}

/** Steps logged at or before `asOfSeq`. */
function stepsAsOf(entry: TaskEntry, asOfSeq: number): number {
  const seqs = entry.stepSeqs;
  if (seqs.length === 0 || seqs.at(seqs.length - 1) <= asOfSeq) return seqs.length;
  let low = 0;
  let high = seqs.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (seqs.at(middle) <= asOfSeq) low = middle + 1;
    else high = middle;
  }
  return low;
}

function taskBytes(entry: TaskEntry, asOfSeq: number, from: number, to: number): number {
  let bytes = entry.headBytes(asOfSeq) + STEPS_KEY_BYTES + Math.max(0, to - from - 1);
  for (let index = from; index < to; index++) bytes += entry.stepBytes(index);
  return bytes;
}

/** Estimated bytes of a JSON list of these whole tasks, without its brackets. */
function listBytes(entries: readonly TaskEntry[], asOfSeq: number): number {
  let bytes = Math.max(0, entries.length - 1);
  for (const entry of entries) bytes += taskBytes(entry, asOfSeq, 0, stepsAsOf(entry, asOfSeq));
  return bytes;
}

function wholeTasks(entries: readonly TaskEntry[], asOfSeq: number): TaskView[] {
  return entries.map((entry) => taskWithSteps(entry.headAsOf(asOfSeq), entry.steps(0, stepsAsOf(entry, asOfSeq))));
}

/** Seqs of the `count` newest tasks created at or before `asOfSeq`, oldest first. */
function newestTaskSeqs(source: TaskSource, asOfSeq: number, count: number): number[] {
  const seqs: number[] = [];
  for (const entry of source.tasksInOrder(0)) {
    if (entry.seq > asOfSeq) break;
    seqs.push(entry.seq);
  }
  return seqs.slice(Math.max(0, seqs.length - count));
}

function sizeOf(items: Iterable<unknown>): number {
  let total = 0;
  for (const _ of items) total++;
  return total;
}
