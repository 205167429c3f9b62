import { DATA_FILE_FORMAT, type DataFile } from '../protocol/data-file.js';
import { GENESIS_HASH, type ChainPoint, type ChainRecord, type RecordStub } from '../protocol/records.js';
import { applyRecordToTasks, tasksToTrim, type TaskView } from '../protocol/task-view.js';

type ChainItem = ChainRecord | RecordStub;
const isStub = (item: ChainItem): item is RecordStub => Array.isArray(item);

/**
 * The durable chain in memory: exactly what is on disk (checkpoint + journal), never ahead of it.
 * `items` covers every seq from anchor.seq + 1 to head.seq: kept records, and stubs for records
 * trimmed away by max_tasks. `tasks` is the original model's view of the kept records.
 */
export class ChainState {
  anchor: ChainPoint = { seq: 0, hash: GENESIS_HASH };
  head: ChainPoint = { seq: 0, hash: GENESIS_HASH };
  private items: ChainItem[] = [];
  readonly tasks = new Map<string, TaskView>();
  private readonly taskSeqs = new Map<string, number[]>();

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
    }
    return task;
  }

  private indexOf(seq: number): number {
    return seq - this.anchor.seq - 1;
  }

  hashAt(seq: number): string | undefined {
    if (seq === this.anchor.seq) return this.anchor.hash;
    const item = this.items[this.indexOf(seq)];
    if (!item) return undefined;
    return isStub(item) ? item[1] : item.hash;
  }

  /** Kept records with seq > after, ascending, within both caps (at least one if any). */
  recordsAfter(after: number, maxRecords: number, maxBytes: number): ChainRecord[] {
    const out: ChainRecord[] = [];
    let bytes = 0;
    for (let i = Math.max(0, this.indexOf(after + 1)); i < this.items.length && out.length < maxRecords; i++) {
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
    if (this.tasks.size <= maxTasks) return [];
    const lastSeqOf = (task: TaskView) => (this.taskSeqs.get(task.task_id) as number[]).at(-1) as number;
    const dropped = tasksToTrim(this.tasks, maxTasks, (task) => holdAbove !== null && lastSeqOf(task) > holdAbove);
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
    let folded = 0;
    for (const item of this.items) {
      const seq = isStub(item) ? item[0] : item.seq;
      const foldable = isStub(item) || (item.type === 'tamper_detected' && seq < oldestTaskSeq && (holdAbove === null || seq <= holdAbove));
      if (!foldable) break;
      this.anchor = { seq, hash: isStub(item) ? item[1] : item.hash };
      folded++;
    }
    if (folded) this.items.splice(0, folded);
  }

  get runningTasks(): TaskView[] {
    return [...this.tasks.values()].filter((task) => task.status === 'running');
  }

  toDataFile(machineId: string, maxTasks: number): DataFile {
    const tasks = [...this.tasks.values()];
    const stubs: RecordStub[] = [];
    const records: ChainRecord[] = [];
    for (const item of this.items) {
      if (isStub(item)) stubs.push(item);
      else records.push(item);
    }
    return {
      tasks,
      count: tasks.length,
      max_tasks: maxTasks,
      format: DATA_FILE_FORMAT,
      machine_id: machineId,
      head: { ...this.head },
      chain: { anchor: { ...this.anchor }, stubs, records },
    };
  }
}
