import { mkdirSync } from 'node:fs';
import { Low } from 'lowdb';
import { ChainBreak, verifyDataFile } from '../protocol/chain-verify.js';
import { journalLine, type DataFile } from '../protocol/data-file.js';
import { ErrorCodes, RpcError } from '../protocol/errors.js';
import type { CompleteTaskInput, CreateTaskInput, LogStepInput } from '../protocol/methods.js';
import { chainRecord, type ChainPoint, type ChainRecord, type UnchainedRecord } from '../protocol/records.js';
import type { TaskView } from '../protocol/task-view.js';
import { verifyDataFileOnDisk } from '../node/verify-files.js';
import { ChainState } from './chain-state.js';
import { DurableJsonFile } from './checkpoint-file.js';
import { Journal, JournalDamaged } from './journal.js';
import { log } from '../node/log.js';
import { newTaskId, type RecordBuilder } from './record-builder.js';
import { sha256Hex } from '../node/sha256.js';

/** The data on disk cannot be trusted: the daemon must not start (and must not overwrite it). */
export class StoreDamaged extends Error {}

export interface StoreOptions {
  dataDir: string;
  dataFile: string;
  machineId: string;
  maxTasks: number;
  builder: RecordBuilder;
  /** Write the checkpoint after this long without commits. */
  checkpointIdleMs: number;
  /** ...or at once when the journal has grown this much since the last checkpoint. */
  checkpointJournalBytes: number;
  /** Seq the cloud is known to hold (its cursor); trimming keeps everything above. Null: no cloud. */
  holdUnackedAbove: number | null;
}

interface Batch {
  records: ChainRecord[];
  text: string;
  waiters: { resolve: () => void; reject: (error: Error) => void }[];
}

type CommitListener = (records: ChainRecord[]) => void;

const CHECKPOINT_RETRY_MS = 5000;

/**
 * The task history: durable state (ChainState, exactly what is on disk) plus a staging layer for
 * records on their way to disk. Calls are validated against durable + staged state, chained at
 * once, and committed in groups: the records of one turn of the event loop, or of every turn
 * while the previous group syncs, go out in one journal write and one fdatasync. A caller's
 * promise resolves only after its record is fdatasync'ed; if a write fails, that group and the
 * one staged after it fail and staging falls back to the durable state, so memory never runs
 * ahead of the disk.
 */
export class TaskStore {
  readonly machineId: string;
  maxTasks: number;
  checkpointSeq = 0;
  /** Set when trimming makes the file differ from the state at the same head. */
  private viewChangedSinceCheckpoint = false;
  private readonly state: ChainState;
  private readonly db: Low<DataFile>;
  readonly file: DurableJsonFile;
  private readonly journal: Journal;
  private readonly builder: RecordBuilder;

  private stagedHead: ChainPoint;
  private readonly stagedTasks = new Map<string, { finished: boolean; lastSeq: number }>();
  private pending: Batch | null = null;
  /** A large group's fdatasync is running in the thread pool. */
  private syncing = false;
  /** The largest group of late, forgotten by one per group: how many writers are busy. */
  private recentLargestGroup = 0;
  private drainWaiters: (() => void)[] = [];
  private closed = false;
  private lastStorageError: string | null = null;

  private readonly listeners = new Set<CommitListener>();
  private holdAbove: number | null = null;

  private checkpointTimer: NodeJS.Timeout | null = null;
  private diskLock: Promise<unknown> = Promise.resolve();
  private readonly options: StoreOptions;

  private constructor(options: StoreOptions, state: ChainState, file: DurableJsonFile, journal: Journal) {
    this.options = options;
    this.machineId = options.machineId;
    this.maxTasks = options.maxTasks;
    this.builder = options.builder;
    this.state = state;
    this.file = file;
    this.db = new Low(file, null as unknown as DataFile);
    this.journal = journal;
    this.stagedHead = { ...state.head };
  }

  /** Loads and verifies the checkpoint and the journal. Throws StoreDamaged when they do not hold up. */
  static async open(options: StoreOptions): Promise<TaskStore> {
    mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
    const file = new DurableJsonFile(options.dataFile);
    const journal = new Journal(options.dataDir);
    let doc: DataFile | null;
    let journalRecords: ChainRecord[];
    try {
      const contents = journal.load();
      journalRecords = contents.records;
      if (contents.droppedTailBytes) {
        log.warn('cut a torn, never-acknowledged write off the journal', { bytes: contents.droppedTailBytes });
      }
      doc = await file.read();
    } catch (error) {
      if (error instanceof ChainBreak) throw new StoreDamaged(`${options.dataFile} is damaged: ${error.message} (${error.reason})`);
      if (error instanceof JournalDamaged) throw new StoreDamaged(error.message);
      throw error;
    }
    if (!doc && journalRecords.length && journalRecords[0].seq !== 1) {
      throw new StoreDamaged(`${options.dataFile} is missing but the journal beside it starts at seq ${journalRecords[0].seq}: records 1..${journalRecords[0].seq - 1} are gone`);
    }
    const base = doc ?? new ChainState().toDataFile(options.machineId, options.maxTasks);
    try {
      verifyDataFile(base, sha256Hex, journalRecords);
    } catch (error) {
      if (!(error instanceof ChainBreak)) throw error;
      const where = error.seq === null ? '' : ` at seq ${error.seq}`;
      throw new StoreDamaged(`${options.dataFile} does not verify${where}: ${error.reason} (${error.message})`);
    }
    const store = new TaskStore(options, ChainState.fromDataFile(base), file, journal);
    store.holdAbove = options.holdUnackedAbove;
    store.viewChangedSinceCheckpoint = !doc;
    for (const record of journalRecords) if (record.seq > store.state.head.seq) store.applyDurable(record);
    store.stagedHead = store.head;
    store.checkpointSeq = doc?.head.seq ?? 0;
    if (doc && doc.machine_id !== options.machineId) {
      log.warn('the data file was written under another machine id; new tasks use this one', { file: options.dataFile, file_machine_id: doc.machine_id, machine_id: options.machineId });
    }
    // A missing file is written before serving (the watcher must find one); a replayed journal
    // is folded into the file soon after, off the start-up path.
    if (!doc) await store.checkpoint();
    else if (store.viewChangedSinceCheckpoint || store.state.head.seq !== store.checkpointSeq) store.scheduleCheckpoint();
    return store;
  }

  get head(): ChainPoint {
    return { ...this.state.head };
  }

  hashAt(seq: number): string | undefined {
    return this.state.hashAt(seq);
  }

  recordsAfter(seq: number, maxRecords: number, maxBytes: number): ChainRecord[] {
    return this.state.recordsAfter(seq, maxRecords, maxBytes);
  }

  onCommit(listener: CommitListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Trimming keeps every record above `ackedSeq` until the cloud has it; null: no cloud. */
  holdUnackedAbove(ackedSeq: number | null): void {
    this.holdAbove = ackedSeq;
    this.trim();
    this.scheduleCheckpoint();
  }

  setMaxTasks(maxTasks: number): void {
    this.maxTasks = maxTasks;
    this.trim();
    this.scheduleCheckpoint();
  }

  // Reads: durable state only.

  getTask(taskId: string): TaskView {
    const task = this.state.tasks.get(taskId);
    if (!task) throw new RpcError(ErrorCodes.TaskNotFound, `no task ${taskId}`, { task_id: taskId });
    return task;
  }

  get tasks(): TaskView[] {
    return [...this.state.tasks.values()];
  }

  get runningTasks(): TaskView[] {
    return this.state.runningTasks;
  }

  /** The last journal write error, while writing keeps failing; null once a write succeeds. */
  get storageError(): string | null {
    return this.lastStorageError;
  }

  // Writes.

  async createTask(params: CreateTaskInput): Promise<{ task_id: string; seq: number }> {
    let taskId = newTaskId();
    while (this.taskStatus(taskId)) taskId = newTaskId();
    const seq = await this.commit(this.builder.taskCreated(params, taskId, this.machineId), taskId, false);
    return { task_id: taskId, seq };
  }

  async logStep(params: LogStepInput): Promise<{ seq: number }> {
    this.requireRunning(params.task_id);
    return { seq: await this.commit(this.builder.stepLogged(params), params.task_id, false) };
  }

  async completeTask(params: CompleteTaskInput): Promise<{ seq: number }> {
    this.requireRunning(params.task_id);
    return { seq: await this.commit(this.builder.taskCompleted(params), params.task_id, true) };
  }

  /** Appends one of the daemon's own records (not about a task). */
  appendDaemonRecord(body: UnchainedRecord): Promise<number> {
    return this.commit(body);
  }

  private taskStatus(taskId: string): 'running' | 'finished' | undefined {
    const staged = this.stagedTasks.get(taskId);
    if (staged) return staged.finished ? 'finished' : 'running';
    const task = this.state.tasks.get(taskId);
    if (!task) return undefined;
    return task.status === 'running' ? 'running' : 'finished';
  }

  private requireRunning(taskId: string): void {
    const status = this.taskStatus(taskId);
    if (status === undefined) throw new RpcError(ErrorCodes.TaskNotFound, `no task ${taskId}`, { task_id: taskId });
    if (status === 'finished') {
      throw new RpcError(ErrorCodes.TaskFinished, `task ${taskId} is already finished; the log is append-only`, { task_id: taskId });
    }
  }

  private commit(body: UnchainedRecord, taskId?: string, finishes = false): Promise<number> {
    if (this.closed) return Promise.reject(new RpcError(ErrorCodes.ShuttingDown));
    const record = chainRecord(body, this.stagedHead.seq, this.stagedHead.hash, sha256Hex);
    this.stagedHead = { seq: record.seq, hash: record.hash };
    if (taskId) this.stagedTasks.set(taskId, { finished: finishes, lastSeq: record.seq });
    let batch = this.pending;
    if (!batch) {
      batch = this.pending = { records: [], text: '', waiters: [] };
      // Let every message read in this turn of the event loop join the group.
      if (!this.syncing) setImmediate(() => this.flush());
    }
    batch.records.push(record);
    batch.text += journalLine(record);
    return new Promise((resolve, reject) => batch.waiters.push({ resolve: () => resolve(record.seq), reject }));
  }

  /**
   * Writes and syncs the pending group. A group as large as any of late holds every busy writer:
   * nobody else is coming, so it syncs on this thread (the thread pool's round trip costs as much
   * as the sync). A smaller one means more calls are on their way: it syncs in the thread pool
   * while this thread reads, checks and chains them into the next group.
   */
  private flush(): void {
    const batch = this.pending;
    if (this.syncing || !batch) return;
    this.pending = null;
    const first = batch.records[0].seq;
    const last = batch.records[batch.records.length - 1].seq;
    const everyBusyWriterIsHere = batch.records.length >= this.recentLargestGroup;
    this.recentLargestGroup = Math.max(batch.records.length, this.recentLargestGroup - 1);
    let syncing: Promise<void> | null = null;
    try {
      if (everyBusyWriterIsHere) this.journal.appendNow(batch.text, first, last);
      else syncing = this.journal.append(batch.text, first, last);
    } catch (error) {
      this.failFrom(batch, error as NodeJS.ErrnoException);
      return;
    }
    if (!syncing) {
      this.committed(batch, last);
      return;
    }
    this.syncing = true;
    syncing.then(
      () => {
        this.syncing = false;
        this.committed(batch, last);
        // The answers go out after this callback: the next group's sync starts first.
        this.flush();
      },
      (error: NodeJS.ErrnoException) => {
        this.syncing = false;
        this.failFrom(batch, error);
      },
    );
  }

  private committed(batch: Batch, last: number): void {
    for (const record of batch.records) this.applyDurable(record);
    for (const [taskId, staged] of this.stagedTasks) if (staged.lastSeq <= last) this.stagedTasks.delete(taskId);
    if (this.lastStorageError) {
      log.info('journal writes work again', { dir: this.options.dataDir });
      this.lastStorageError = null;
    }
    for (const waiter of batch.waiters) waiter.resolve();
    for (const listener of this.listeners) {
      try {
        listener(batch.records);
      } catch (error) {
        log.error('a commit listener failed', { error: String(error) });
      }
    }
    this.scheduleCheckpoint();
    this.wakeDrainWaiters();
  }

  /** The failed group fails with every group staged after it, and staging falls back to the durable state. */
  private failFrom(batch: Batch, error: NodeJS.ErrnoException): void {
    const failed = [batch, ...(this.pending ? [this.pending] : [])];
    this.pending = null;
    this.stagedTasks.clear();
    this.stagedHead = { ...this.state.head };
    const code = error.code ?? 'EIO';
    const message = `could not write the journal in ${this.options.dataDir} (${code}): nothing was recorded; free space or fix permissions, then retry`;
    if (this.lastStorageError !== message) log.error('journal write failed; calls are refused until writing works again', { dir: this.options.dataDir, error: code });
    this.lastStorageError = message;
    const rpcError = new RpcError(ErrorCodes.StorageFailure, message, { errno: code, dir: this.options.dataDir });
    for (const group of failed) for (const waiter of group.waiters) waiter.reject(rpcError);
    this.wakeDrainWaiters();
  }

  private wakeDrainWaiters(): void {
    if (this.syncing || this.pending) return;
    for (const wake of this.drainWaiters.splice(0)) wake();
  }

  /**
   * Applies a record that is on disk. Trimming follows each record that changes the task count,
   * so replaying a journal (or a restore) ends in exactly the view the live daemon had.
   */
  private applyDurable(record: ChainRecord): void {
    this.state.apply(record);
    if (record.type === 'task_created' || record.type === 'task_completed') this.trim();
  }

  /** Trims to max_tasks; the next checkpoint then writes the smaller file. */
  private trim(): void {
    if (this.state.trim(this.maxTasks, this.holdAbove).length) this.viewChangedSinceCheckpoint = true;
  }

  // Checkpoints.

  private scheduleCheckpoint(): void {
    if (this.journal.bytesSinceCheckpoint >= this.options.checkpointJournalBytes) {
      void this.checkpoint().catch(() => undefined);
      return;
    }
    if (this.checkpointTimer) clearTimeout(this.checkpointTimer);
    this.checkpointTimer = setTimeout(() => {
      this.checkpointTimer = null;
      this.checkpoint().catch(() => {
        this.checkpointTimer ??= setTimeout(() => this.scheduleCheckpoint(), CHECKPOINT_RETRY_MS);
      });
    }, this.options.checkpointIdleMs);
  }

  /**
   * Writes task_history.json from the durable state, then drops the journal segments it covers.
   * `force` rewrites it even when nothing changed (after a foreign edit or deletion).
   */
  checkpoint(force = false): Promise<void> {
    return this.withDiskLock(async () => {
      if (!force && this.state.head.seq === this.checkpointSeq && !this.viewChangedSinceCheckpoint) return;
      const doc = this.state.toDataFile(this.machineId, this.maxTasks);
      this.journal.requestRotation();
      this.db.data = doc;
      try {
        await this.db.write();
      } catch (error) {
        log.warn('could not write the checkpoint; every record stays in the journal, retrying', { file: this.options.dataFile, error: (error as NodeJS.ErrnoException).code ?? String(error) });
        throw error;
      }
      this.checkpointSeq = doc.head.seq;
      this.viewChangedSinceCheckpoint = false;
      this.journal.deleteCoveredSegments(doc.head.seq);
    });
  }


  /** Runs fn while no checkpoint is being written (and none starts). */
  withDiskLock<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.diskLock.then(fn, fn);
    this.diskLock = run.catch(() => undefined);
    return run;
  }

  /** Verifies what is on disk: the checkpoint and the journal. */
  verifyOnDisk() {
    return this.withDiskLock(async () => verifyDataFileOnDisk(this.options.dataFile));
  }

  /** Refuses new records, waits for the ones in flight, writes a last checkpoint. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.syncing || this.pending) await new Promise<void>((resolve) => this.drainWaiters.push(resolve));
    if (this.checkpointTimer) clearTimeout(this.checkpointTimer);
    this.checkpointTimer = null;
    await this.checkpoint().catch(() => undefined);
    this.journal.close();
  }
}
