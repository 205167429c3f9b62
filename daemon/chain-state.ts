import { contentProblem } from '../protocol/chain-verify.js';
import { expandStepView, rebuildStepRecord, stepViewOf } from '../protocol/data-file-v2.js';
import { GENESIS_HASH, type ChainPoint, type ChainRecord, type StepLoggedRecord, type Writer } from '../protocol/records.js';
import { applyRecordToTasks, tasksToTrim, type StepView, type TaskView } from '../protocol/task-view.js';
import { sha256Hex } from '../node/sha256.js';
import type { ContentCache } from './content-cache.js';
import type { HashSpill } from './hash-spill.js';
import type { RecordFiles } from './record-files.js';
import { SeqList } from './seq-list.js';
import { RecordForm, RecordIndex, RecordKind, recordKindOf, type RecordFormValue } from './record-index.js';

/** Where a line is: a file of the registry, its offset and byte length. */
export interface LinePlace {
  fileId: number;
  offset: number;
  length: number;
}

/** Where a seq known only by its hash is: nowhere yet. Shared: start-up appends one per step. */
const STUB_LOCATION = Object.freeze({ form: RecordForm.stub, fileId: 0, offset: 0, length: 0, task: 0 });

/** What memory keeps of a task: what `status` and trimming need, and the seqs of its records. */
export interface TaskMeta {
  readonly ordinal: number;
  readonly task_id: string;
  /** Seq of the creating record. */
  readonly seq: number;
  readonly timestamp: number;
  readonly description: string;
  readonly agent?: string;
  /** The task_created record's writer: its uid is who may see the task (daemon/task-access.ts). */
  readonly writer?: Writer;
  status: TaskView['status'];
  completedSeq?: number;
  /** Seqs of its steps, ascending. */
  readonly stepSeqs: SeqList;
}

/** The content at a seq is not what its hash says: a foreign writer changed a file in place. */
export class RecordDamaged extends Error {
  constructor(
    readonly seq: number,
    readonly path: string,
  ) {
    super(`record ${seq} in ${path} does not match its hash: the file was changed by someone else`);
  }
}

/**
 * The durable chain: exactly what is on disk (checkpoint + journal), never ahead of it. Memory
 * holds an index (per seq: hash, kind, where its line is; per task: its seqs and what `status`
 * shows), never the content, which is read from disk (or the small cache of recent lines) when a
 * call needs it. Trimming costs what it drops: finished tasks are kept apart in creation order.
 */
export class ChainState {
  anchor: ChainPoint = { seq: 0, hash: GENESIS_HASH };
  head: ChainPoint = { seq: 0, hash: GENESIS_HASH };
  index: RecordIndex;
  readonly tasks = new Map<string, TaskMeta>();
  private readonly byOrdinal = new Map<number, TaskMeta>();
  private nextOrdinal = 1;
  /** Finished tasks, oldest created first: the only ones trimming may drop. */
  private finished: TaskMeta[] = [];
  /** The last trim could not get down to max_tasks with these settings; nothing droppable since. */
  private exhausted: { maxTasks: number; holdAbove: number | null } | null = null;

  constructor(
    readonly files: RecordFiles,
    private readonly cache: ContentCache,
    /** Where the index puts the hashes of its older chunks; none: all in memory. */
    private readonly spill: HashSpill | null = null,
  ) {
    this.index = new RecordIndex(0, spill);
  }

  /** Forgets everything (a data file half indexed, before it is read another way). */
  clear(): void {
    this.startAfter({ seq: 0, hash: GENESIS_HASH });
    this.tasks.clear();
    this.byOrdinal.clear();
    this.nextOrdinal = 1;
    this.finished = [];
    this.exhausted = null;
    this.cache.clear();
  }

  /** Starts an empty chain after `anchor` (a data file's anchor). */
  startAfter(anchor: ChainPoint): void {
    this.anchor = { ...anchor };
    this.head = { ...anchor };
    this.index.release();
    this.index = new RecordIndex(anchor.seq, this.spill);
  }

  /** Appends a durable record stored whole at `place` (`line`: its text, for the cache). */
  apply(record: ChainRecord, place: LinePlace, line?: string): void {
    const kind = recordKindOf(record.type);
    let task: TaskMeta | undefined;
    if (record.type === 'task_created') {
      task = {
        ordinal: this.nextOrdinal++,
        task_id: record.task_id,
        seq: record.seq,
        timestamp: record.ts,
        description: record.description,
        ...(record.agent !== undefined && { agent: record.agent }),
        ...(record.writer !== undefined && { writer: record.writer }),
        status: 'running',
        stepSeqs: new SeqList(record.seq),
      };
      this.tasks.set(task.task_id, task);
      this.byOrdinal.set(task.ordinal, task);
    } else if (record.type !== 'tamper_detected') {
      task = this.tasks.get(record.task_id);
    }
    this.index.push(record.seq, record.hash, kind, { form: RecordForm.recordLine, ...place, task: task?.ordinal ?? 0 });
    this.head = { seq: record.seq, hash: record.hash };
    if (line !== undefined) this.cache.put(record.seq, { form: RecordForm.recordLine, text: line });
    if (!task) return;
    if (record.type === 'step_logged') task.stepSeqs.push(record.seq);
    if (record.type === 'task_completed') {
      task.status = record.final_status;
      task.completedSeq = record.seq;
      this.addFinished(task);
    }
  }

  /** Appends a seq known only by its hash: a trimmed record, or a step whose view comes later in the file. */
  appendHash(seq: number, hash: string): void {
    this.index.push(seq, hash, RecordKind.unknown, STUB_LOCATION);
    this.head = { seq, hash };
  }

  /** appendHash for consecutive seqs from `firstSeq`, their hashes binary (32 bytes each). */
  appendHashes(firstSeq: number, hashes: Buffer): void {
    if (hashes.length === 0) return;
    this.index.pushHashes(firstSeq, hashes);
    this.head = { seq: this.index.lastSeq, hash: hashes.toString('hex', hashes.length - 32) };
  }

  /** A step view line of the data file for a seq appended by hash: the step is kept, its content there. */
  claimStepView(seq: number, taskId: string, fileId: number, offset: number, length: number): boolean {
    const task = this.tasks.get(taskId);
    if (!task || !this.index.has(seq) || this.index.form(seq) !== RecordForm.stub) return false;
    if ((task.stepSeqs.last() ?? -1) >= seq) return false;
    this.index.setKind(seq, RecordKind.stepLogged);
    this.index.setLocationOf(seq, RecordForm.stepViewLine, fileId, offset, length, task.ordinal);
    task.stepSeqs.push(seq);
    return true;
  }

  /** Caches a line read at start-up (a small log is held whole: a foreign overwrite in place can be repaired). */
  cacheLine(seq: number, form: RecordFormValue, text: string): void {
    this.cache.put(seq, { form, text });
  }

  private addFinished(task: TaskMeta): void {
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
    if (exhausted && (exhausted.holdAbove === null || (task.completedSeq as number) <= exhausted.holdAbove)) this.exhausted = null;
  }

  hashAt(seq: number): string | undefined {
    if (seq === this.anchor.seq) return this.anchor.hash;
    if (seq < this.anchor.seq) return undefined;
    return this.index.hashAt(seq);
  }

  taskByOrdinal(ordinal: number): TaskMeta | undefined {
    return this.byOrdinal.get(ordinal);
  }

  /** The stored line of a kept seq, from the cache or the disk. */
  line(seq: number): { form: RecordFormValue; text: string } {
    const cached = this.cache.get(seq);
    if (cached) return cached;
    const { form, fileId, offset, length } = this.index.location(seq);
    if (form === RecordForm.stub) throw new Error(`record ${seq} was trimmed away`);
    return { form, text: this.files.read(fileId, offset, length).toString('utf8') };
  }

  /** The line a checkpoint copies, from its file (a trimmed record's line stays in its file until that checkpoint is in place). */
  storedLine(seq: number): Buffer {
    const line = Buffer.allocUnsafe(this.index.lengthOf(seq));
    this.readStoredLine(seq, line, 0);
    return line;
  }

  /** Reads the stored line of a kept seq into `target` at `at`; returns its length. */
  readStoredLine(seq: number, target: Buffer, at: number): number {
    const { fileId, offset, length } = this.index.location(seq);
    this.files.readInto(fileId, offset, length, target, at);
    return length;
  }

  /** The cached line of a seq, when it was cached in `form`. */
  cachedLine(seq: number, form: RecordFormValue): string | undefined {
    const cached = this.cache.get(seq);
    return cached?.form === form ? cached.text : undefined;
  }

  /** The record at a kept seq, checked against its hash (RecordDamaged when its file was changed). */
  record(seq: number): ChainRecord {
    const { form, text } = this.line(seq);
    let record: ChainRecord;
    try {
      if (form === RecordForm.recordLine) {
        record = JSON.parse(text) as ChainRecord;
      } else {
        const task = this.byOrdinal.get(this.index.taskOf(seq)) as TaskMeta;
        record = rebuildStepRecord(expandStepView(JSON.parse(text) as StepView, task.writer), task.task_id, this.hashAt(seq - 1) as string, this.hashAt(seq) as string, sha256Hex);
      }
    } catch {
      throw new RecordDamaged(seq, this.pathOf(seq));
    }
    if (record.seq !== seq || record.hash !== this.hashAt(seq) || contentProblem(record, sha256Hex)) throw new RecordDamaged(seq, this.pathOf(seq));
    return record;
  }

  private pathOf(seq: number): string {
    return this.files.path(this.index.location(seq).fileId);
  }

  /** The step view of a kept step seq (not re-hashed: reads of views trust the verified files). */
  stepView(seq: number): StepView {
    const { form, text } = this.line(seq);
    if (form !== RecordForm.stepViewLine) return stepViewOf(JSON.parse(text) as StepLoggedRecord);
    return expandStepView(JSON.parse(text) as StepView, this.byOrdinal.get(this.index.taskOf(seq))?.writer);
  }

  /** The task's view without its steps, as of `asOfSeq`: a completion after it shows as running. */
  taskHead(task: TaskMeta, asOfSeq = this.head.seq): TaskView {
    const views = new Map<string, TaskView>();
    applyRecordToTasks(views, this.record(task.seq));
    if (task.completedSeq !== undefined && task.completedSeq <= asOfSeq) applyRecordToTasks(views, this.record(task.completedSeq));
    return views.get(task.task_id) as TaskView;
  }

  /** The task's whole view, every step read. */
  taskView(task: TaskMeta): TaskView {
    const view = this.taskHead(task);
    view.steps = Array.from(task.stepSeqs, (seq) => this.stepView(seq));
    return view;
  }

  /** Kept records with seq > after, ascending, within both caps (at least one if any). */
  recordsAfter(after: number, maxRecords: number, maxBytes: number): ChainRecord[] {
    const out: ChainRecord[] = [];
    let bytes = 0;
    for (let seq = Math.max(after, this.anchor.seq) + 1; seq <= this.head.seq && out.length < maxRecords; seq++) {
      if (this.index.form(seq) === RecordForm.stub) throw new Error(`record ${seq} was trimmed before the cloud acknowledged it`);
      bytes += this.index.lengthOf(seq) + 512;
      if (out.length > 0 && bytes > maxBytes) break;
      out.push(this.record(seq));
    }
    return out;
  }

  /**
   * Drops the oldest finished tasks while more than maxTasks are kept. A running task is never
   * dropped, nor a task with a record above `holdAbove` (not yet acknowledged by the cloud).
   * Dropped records keep only their hash; leading ones fold into the anchor.
   */
  trim(maxTasks: number, holdAbove: number | null): string[] {
    if (this.tasks.size <= maxTasks || this.finished.length === 0) return [];
    const exhausted = this.exhausted;
    if (exhausted && exhausted.holdAbove === holdAbove && exhausted.maxTasks <= maxTasks) return [];
    const held = (task: TaskMeta) => holdAbove !== null && (task.completedSeq as number) > holdAbove;
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
      for (const seq of [task.seq, ...task.stepSeqs, task.completedSeq as number]) {
        this.index.makeStub(seq);
        this.cache.delete(seq);
      }
      this.tasks.delete(task.task_id);
      this.byOrdinal.delete(task.ordinal);
    }
    this.foldLeadingSeqs(holdAbove);
    return dropped.map((task) => task.task_id);
  }

  /** Moves the anchor past leading stubs, and past daemon records older than every kept task. */
  private foldLeadingSeqs(holdAbove: number | null): void {
    const oldestTaskSeq = this.tasks.values().next().value?.seq ?? Infinity;
    for (let seq = this.anchor.seq + 1; seq <= this.head.seq; seq++) {
      const stub = this.index.form(seq) === RecordForm.stub;
      const daemonRecord = this.index.kindOf(seq) === RecordKind.daemon;
      if (!stub && !(daemonRecord && seq < oldestTaskSeq && (holdAbove === null || seq <= holdAbove))) break;
      this.anchor = { seq, hash: this.index.hashAt(seq) as string };
      this.cache.delete(seq);
    }
  }

  /** Frees the index below the anchor; only while no checkpoint is reading it. */
  compact(): void {
    this.index.dropThrough(this.anchor.seq);
  }

  get runningTasks(): TaskMeta[] {
    return [...this.tasks.values()].filter((task) => task.status === 'running');
  }
}
