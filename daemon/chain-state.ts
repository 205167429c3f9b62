import { DATA_FILE_FORMAT_V1, type DataFile } from '../protocol/data-file.js';
import { GENESIS_HASH, type ChainPoint, type ChainRecord, type RecordStub } from '../protocol/records.js';
import { applyRecordToTasks, tasksToTrim, type TaskView } from '../protocol/task-view.js';

type ChainItem = ChainRecord | RecordStub;
const isStub = (item: ChainItem): item is RecordStub => Array.isArray(item);

/** Folded items are cut off the front of `items` only once they are this many and half of it: no copy per trim. */
const COMPACT_AFTER = 1024;

/**
 * The durable chain in memory: exactly what is on disk (checkpoint + journal), never ahead of it.
 * `items` from `start` on covers every seq from anchor.seq + 1 to head.seq: kept records, and
 * stubs for records trimmed away by max_tasks. `tasks` is the original model's view of the kept
 * records. Trimming costs what it drops, not what it keeps: finished tasks are kept apart in
 * creation order, and a trim that found nothing to drop is not repeated until that can change.
 */
export class ChainState {
  anchor: ChainPoint = { seq: 0, hash: GENESIS_HASH };
  head: ChainPoint = { seq: 0, hash: GENESIS_HASH };
  private items: ChainItem[] = [];
  private start = 0;
  readonly tasks = new Map<string, TaskView>();
  private readonly taskSeqs = new Map<string, number[]>();
  /** Finished tasks, oldest created first: the only ones trimming may drop. */
  private finished: TaskView[] = [];
  /** The last trim could not get down to max_tasks with these settings; nothing droppable since. */
  private exhausted: { maxTasks: number; holdAbove: number | null } | null = null;

  /** Rebuilds the state of a verified data file. */
  static fromDataFile(doc: DataFile): ChainState {
    const state = new ChainState();
    state.anchor = { ...doc.chain.anchor };
    state.head = { ...doc.chain.anchor };
    const stubs = new Map(doc.chain.stubs.map((stub) => [stub[0], stub]));
    const records = new Map(doc.chain.records.map((record) => [record.seq, record]));
    for (let seq = doc.chain.anchor.seq + 1; seq <= doc.head.seq; seq++) {
      const stub = stubs.get(seq);
      if (stub) {
        state.items.push(stub);
        state.head = { seq, hash: stub[1] };
      } else {
        state.apply(records.get(seq) as ChainRecord);
      }
    }
    return state;
  }

  /** Appends a durable record. */
  apply(record: ChainRecord): TaskView | undefined {
    this.items.push(record);
    this.head = { seq: record.seq, hash: record.hash };
    const task = applyRecordToTasks(this.tasks, record);
    if (task) {
      const seqs = this.taskSeqs.get(task.task_id);
      if (seqs) seqs.push(record.seq);
      else this.taskSeqs.set(task.task_id, [record.seq]);
      if (record.type === 'task_completed') this.addFinished(task);
    }
    return task;
  }

  private addFinished(task: TaskView): void {
    let low = this.finished.length;
    // Tasks mostly finish in the order they were created: search back from the end.
    if (low > 0 && this.finished[low - 1].seq > task.seq) {
      let high = low;
      low = 0;
      while (low < high) {
        const middle = (low + high) >> 1;
        if (this.finished[middle].seq < task.seq) low = middle + 1;
        else high = middle;
      }
    }
    this.finished.splice(low, 0, task);
    const exhausted = this.exhausted;
    if (exhausted && (exhausted.holdAbove === null || (task.completed_seq as number) <= exhausted.holdAbove)) this.exhausted = null;
  }

  private indexOf(seq: number): number {
    return this.start + seq - this.anchor.seq - 1;
  }

  hashAt(seq: number): string | undefined {
    if (seq === this.anchor.seq) return this.anchor.hash;
    if (seq < this.anchor.seq) return undefined;
    const item = this.items[this.indexOf(seq)];
    if (!item) return undefined;
    return isStub(item) ? item[1] : item.hash;
  }

  /** Kept records with seq > after, ascending, within both caps (at least one if any). */
  recordsAfter(after: number, maxRecords: number, maxBytes: number): ChainRecord[] {
    const out: ChainRecord[] = [];
    let bytes = 0;
    for (let i = Math.max(this.start, this.indexOf(after + 1)); i < this.items.length && out.length < maxRecords; i++) {
      const item = this.items[i];
      if (isStub(item)) {
        throw new Error(`record ${item[0]} was trimmed before the cloud acknowledged it`);
      }
      bytes += item.type === 'step_logged' ? (item.output?.length ?? 0) + (item.error?.length ?? 0) + (item.recovery?.length ?? 0) + 512 : 512;
      if (out.length > 0 && bytes > maxBytes) break;
      out.push(item);
    }
    return out;
  }

  /**
   * Drops the oldest finished tasks while more than maxTasks are kept. A running task is never
   * dropped, nor a task with a record above `holdAbove` (not yet acknowledged by the cloud).
   * Dropped records become stubs; leading stubs fold into the anchor.
   */
  trim(maxTasks: number, holdAbove: number | null): string[] {
    if (this.tasks.size <= maxTasks || this.finished.length === 0) return [];
    const exhausted = this.exhausted;
    if (exhausted && exhausted.holdAbove === holdAbove && exhausted.maxTasks <= maxTasks) return [];
    const held = (task: TaskView) => holdAbove !== null && (task.completed_seq as number) > holdAbove;
    const dropped = tasksToTrim(this.tasks, maxTasks, held, this.finished);
    this.exhausted = this.tasks.size - dropped.length > maxTasks ? { maxTasks, holdAbove } : null;
    if (dropped.length === 0) return [];
    // The dropped tasks are the finished ones scanned, but for those held: take that prefix off.
    const droppedIds = new Set(dropped.map((task) => task.task_id));
    let scanned = 0;
    for (let seen = 0; seen < dropped.length; scanned++) if (droppedIds.has(this.finished[scanned].task_id)) seen++;
    const keptOfScanned = this.finished.slice(0, scanned).filter((task) => !droppedIds.has(task.task_id));
    this.finished.splice(0, scanned, ...keptOfScanned);
    for (const task of dropped) {
      for (const seq of this.taskSeqs.get(task.task_id) as number[]) {
        const record = this.items[this.indexOf(seq)] as ChainRecord;
        this.items[this.indexOf(seq)] = [seq, record.hash];
      }
      this.tasks.delete(task.task_id);
      this.taskSeqs.delete(task.task_id);
    }
    this.foldLeadingItems(holdAbove);
    return dropped.map((task) => task.task_id);
  }

  /** Moves the anchor past leading stubs, and past daemon records older than every kept task. */
  private foldLeadingItems(holdAbove: number | null): void {
    const oldestTaskSeq = this.tasks.values().next().value?.seq ?? Infinity;
    while (this.start < this.items.length) {
      const item = this.items[this.start];
      const seq = isStub(item) ? item[0] : item.seq;
      const foldable = isStub(item) || (item.type === 'tamper_detected' && seq < oldestTaskSeq && (holdAbove === null || seq <= holdAbove));
      if (!foldable) break;
      this.anchor = { seq, hash: isStub(item) ? item[1] : item.hash };
      this.start++;
    }
    if (this.start > COMPACT_AFTER && this.start * 2 > this.items.length) {
      this.items.splice(0, this.start);
      this.start = 0;
    }
  }

  get runningTasks(): TaskView[] {
    return [...this.tasks.values()].filter((task) => task.status === 'running');
  }

  toDataFile(machineId: string, maxTasks: number): DataFile {
    const tasks = [...this.tasks.values()];
    const stubs: RecordStub[] = [];
    const records: ChainRecord[] = [];
    for (let i = this.start; i < this.items.length; i++) {
      const item = this.items[i];
      if (isStub(item)) stubs.push(item);
      else records.push(item);
    }
    return {
      tasks,
      count: tasks.length,
      max_tasks: maxTasks,
      format: DATA_FILE_FORMAT_V1,
      machine_id: machineId,
      head: { ...this.head },
      chain: { anchor: { ...this.anchor }, stubs, records },
    };
  }
}
