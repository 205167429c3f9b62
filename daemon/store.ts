import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ChainBreak, verifyDataFile } from '../protocol/chain-verify.js';
import type { DataFile } from '../protocol/data-file.js';
import { ErrorCodes, RpcError } from '../protocol/errors.js';
import type { CompleteTaskInput, CreateTaskInput, LogStepInput } from '../protocol/methods.js';
import { chainRecord, type ChainPoint, type ChainRecord, type UnchainedRecord } from '../protocol/records.js';
import type { TaskView } from '../protocol/task-view.js';
import { NotARegularFile } from '../node/durable-files.js';
import { log } from '../node/log.js';
import { sha256Hex } from '../node/sha256.js';
import { verifyDataFileOnDisk } from '../node/verify-files.js';
import { ChainPointFile } from './chain-point-file.js';
import { ChainState } from './chain-state.js';
import type { Checkpointer } from './checkpointer.js';
import { DURABLE_HEAD_FILE } from './data-dir.js';
import { GroupCommit, type JournalAppender } from './group-commit.js';
import type { Journal } from './journal.js';
import type { Lifecycle } from './lifecycle.js';
import { newTaskId, type RecordBuilder } from './record-builder.js';

/** The data on disk cannot be trusted: the daemon must not start (and must not overwrite it). */
export class StoreDamaged extends Error {
  constructor(
    message: string,
    /** What to do, when the general advice (restore, or move the file aside) does not fit. */
    readonly advice?: string,
  ) {
    super(message);
  }
}

/**
 * The head file trails the journal by at most this many records or this long: writing it per
 * group would cost two more fsyncs a group. A clean stop writes it exactly.
 */
const HEAD_FILE_RECORDS = 256;
const HEAD_FILE_MAX_LAG_MS = 5000;

export interface StoreOptions {
  dataDir: string;
  dataFile: string;
  machineId: string;
  maxTasks: number;
  builder: RecordBuilder;
  /** Where the data dir's journal is read from at start. */
  journal: Journal;
  /** What commits write through: the journal itself (a failing twin in unit tests). */
  appender?: JournalAppender;
  checkpointer: Checkpointer;
}

type CommitListener = (records: ChainRecord[]) => void;

/**
 * The task history: durable state (ChainState, exactly what is on disk) plus a staging layer for
 * records on their way to disk. Calls are validated against durable + staged state, chained at
 * once and handed to group commit; when a group fails, staging falls back to the durable state,
 * so memory never runs ahead of the disk. Checkpoints are the checkpointer's; the newest durable
 * head also goes to a small file of its own, so that a start can tell when files lost records.
 */
export class TaskStore implements Lifecycle {
  readonly machineId: string;
  maxTasks: number;
  private state = new ChainState();
  private readonly commits: GroupCommit;
  private readonly checkpointer: Checkpointer;
  private readonly headFile: ChainPointFile;
  private headFileTimer: NodeJS.Timeout | null = null;
  private recordsSinceHeadSaved = 0;
  private readonly builder: RecordBuilder;

  private stagedHead: ChainPoint;
  private readonly stagedTasks = new Map<string, { finished: boolean; lastSeq: number }>();
  private closed = false;
  private readonly listeners = new Set<CommitListener>();
  /** Seq the cloud is known to hold; trimming keeps everything above. Null: no cloud. */
  private holdAbove: number | null = null;
  private readonly snapshot = (): DataFile => this.state.toDataFile(this.machineId, this.maxTasks);

  constructor(private readonly options: StoreOptions) {
    this.machineId = options.machineId;
    this.maxTasks = options.maxTasks;
    this.builder = options.builder;
    this.checkpointer = options.checkpointer;
    this.headFile = new ChainPointFile(join(options.dataDir, DURABLE_HEAD_FILE), 'durable head file');
    this.commits = new GroupCommit(options.appender ?? options.journal, options.dataDir, {
      committed: (records) => this.committed(records),
      failed: () => this.unstageAll(),
    });
    this.stagedHead = { ...this.state.head };
  }

  /**
   * Loads and verifies the checkpoint and the journal, and checks that they reach the head the
   * head file says was durable. Throws StoreDamaged when they do not hold up.
   */
  async start(): Promise<void> {
    const { dataDir, dataFile, journal } = this.options;
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    let doc: DataFile | null;
    let journalRecords: ChainRecord[];
    try {
      const contents = journal.load();
      journalRecords = contents.records;
      if (contents.droppedTailBytes) log.warn('cut a torn, never-acknowledged write off the journal', { bytes: contents.droppedTailBytes });
    } catch (error) {
      if (error instanceof ChainBreak || error instanceof NotARegularFile) throw new StoreDamaged(error.message);
      throw error;
    }
    try {
      doc = await this.checkpointer.readCheckpoint();
    } catch (error) {
      if (error instanceof ChainBreak) throw new StoreDamaged(`${dataFile} is damaged: ${error.message} (${error.reason})`);
      throw error;
    }
    if (!doc && journalRecords.length && journalRecords[0].seq !== 1) {
      throw new StoreDamaged(`${dataFile} is missing but the journal beside it starts at seq ${journalRecords[0].seq}: records 1..${journalRecords[0].seq - 1} are gone`);
    }
    const base = doc ?? new ChainState().toDataFile(this.machineId, this.maxTasks);
    try {
      verifyDataFile(base, sha256Hex, journalRecords);
    } catch (error) {
      if (!(error instanceof ChainBreak)) throw error;
      const where = error.seq === null ? '' : ` at seq ${error.seq}`;
      throw new StoreDamaged(`${dataFile} does not verify${where}: ${error.reason} (${error.message})`);
    }
    this.state = ChainState.fromDataFile(base);
    if (!doc) this.checkpointer.noteViewChanged();
    for (const record of journalRecords) if (record.seq > this.state.head.seq) this.applyDurable(record);
    this.requireDurableHead();
    this.stagedHead = this.head;
    if (doc && doc.machine_id !== this.machineId) {
      log.warn('the data file was written under another machine id; new tasks use this one', { file: dataFile, file_machine_id: doc.machine_id, machine_id: this.machineId });
    }
    // A missing file is written before serving (the watcher must find one); a replayed journal
    // is folded into the file soon after, off the start-up path.
    if (!doc) await this.checkpoint();
    else this.checkpointer.schedule(this.snapshot);
  }

  /** The files must account for the head the head file says was durable; a fresh chain would hide the loss. */
  private requireDurableHead(): void {
    const durable = this.headFile.load();
    if (!durable) return;
    const head = this.state.head;
    const hashHere = this.state.hashAt(durable.seq);
    if (head.seq >= durable.seq && (hashHere === undefined || hashHere === durable.hash)) return;
    const found = head.seq < durable.seq ? `its files hold records only up to seq ${head.seq}` : `its record at seq ${durable.seq} is not the one that was durable`;
    throw new StoreDamaged(
      `the data dir ${this.options.dataDir} has lost records: ${this.headFile.path} says seq ${durable.seq} was durable, but ${found} (a journal segment deleted, or the data file replaced by an older copy, while no daemon ran)`,
      `Nothing was changed. To recover: put the missing files back, or restore from the cloud (move the data dir aside and start with --restore); to accept the loss and go on from seq ${head.seq}, delete ${this.headFile.path}`,
    );
  }

  get head(): ChainPoint {
    return { ...this.state.head };
  }

  /** Head seq of the data file on disk. */
  get checkpointSeq(): number {
    return this.checkpointer.checkpointSeq;
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

  /** Trimming keeps every record above `ackedSeq` until the cloud has it; null: no cloud. Set before start for the replay. */
  holdUnackedAbove(ackedSeq: number | null): void {
    this.holdAbove = ackedSeq;
    if (this.trim()) this.checkpointer.schedule(this.snapshot);
  }

  setMaxTasks(maxTasks: number): void {
    this.maxTasks = maxTasks;
    if (this.trim()) this.checkpointer.schedule(this.snapshot);
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
    return this.commits.storageError;
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
    return this.commits.add(record);
  }

  private committed(records: ChainRecord[]): void {
    for (const record of records) this.applyDurable(record);
    const last = records[records.length - 1].seq;
    for (const [taskId, staged] of this.stagedTasks) if (staged.lastSeq <= last) this.stagedTasks.delete(taskId);
    this.recordsSinceHeadSaved += records.length;
    if (this.recordsSinceHeadSaved >= HEAD_FILE_RECORDS) this.saveHead();
    else this.headFileTimer ??= setTimeout(() => this.saveHead(), HEAD_FILE_MAX_LAG_MS);
    for (const listener of this.listeners) {
      try {
        listener(records);
      } catch (error) {
        log.error('a commit listener failed', { error: String(error) });
      }
    }
    this.checkpointer.schedule(this.snapshot);
  }

  private saveHead(): void {
    if (this.headFileTimer) clearTimeout(this.headFileTimer);
    this.headFileTimer = null;
    this.recordsSinceHeadSaved = 0;
    this.headFile.save(this.state.head);
  }

  /** A group failed: staging falls back to the durable state. */
  private unstageAll(): void {
    this.stagedTasks.clear();
    this.stagedHead = { ...this.state.head };
  }

  /**
   * Applies a record that is on disk. Trimming follows each record that changes the task count,
   * so replaying a journal (or a restore) ends in exactly the view the live daemon had.
   */
  private applyDurable(record: ChainRecord): void {
    this.state.apply(record);
    if (record.type === 'task_created' || record.type === 'task_completed') this.trim();
  }

  /** Trims to max_tasks; the next checkpoint then writes the smaller file. True when it dropped something. */
  private trim(): boolean {
    if (this.state.trim(this.maxTasks, this.holdAbove).length === 0) return false;
    this.checkpointer.noteViewChanged();
    return true;
  }

  /** Writes the data file from memory now; `force` even when nothing changed (after damage on disk). */
  checkpoint(force = false): Promise<void> {
    return this.checkpointer.checkpoint(this.snapshot, force);
  }

  /** Verifies what is on disk: the checkpoint and the journal. */
  verifyOnDisk() {
    return this.checkpointer.withDiskLock(async () => verifyDataFileOnDisk(this.options.dataFile));
  }

  /** Refuses new records, waits for the ones in flight. */
  async drain(): Promise<void> {
    this.closed = true;
    await this.commits.drain();
  }

  /** Drains, writes a last checkpoint, records the head and closes the journal. */
  async stop(): Promise<void> {
    await this.drain();
    this.checkpointer.stop();
    await this.checkpoint().catch(() => undefined);
    this.saveHead();
    await this.headFile.flush();
    this.options.journal.close();
  }
}
