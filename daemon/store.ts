import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ChainBreak, ChainWalker, type VerifyReport } from '../protocol/chain-verify.js';
import { ErrorCodes, RpcError } from '../protocol/errors.js';
import type { CompleteTaskInput, CreateTaskInput, LogStepInput } from '../protocol/methods.js';
import { chainRecord, type ChainPoint, type ChainRecord, type UnchainedRecord, type Writer } from '../protocol/records.js';
import type { TaskView } from '../protocol/task-view.js';
import { NotARegularFile } from '../node/durable-files.js';
import { log } from '../node/log.js';
import { sha256Hex } from '../node/sha256.js';
import { verifyDataFileOnDisk } from '../node/verify-files.js';
import { verifyDataFileInWorker } from '../node/verify-in-worker.js';
import { ChainPointFile } from './chain-point-file.js';
import { ChainState, type LinePlace, type TaskMeta } from './chain-state.js';
import { Checkpointer } from './checkpointer.js';
import { ContentCache } from './content-cache.js';
import { HashSpill } from './hash-spill.js';
import { DURABLE_HEAD_FILE } from './data-dir.js';
import { openDataFile } from './data-file-open.js';
import { GroupCommit, type CommittedGroup, type JournalAppender } from './group-commit.js';
import { Journal } from './journal.js';
import type { Lifecycle } from './lifecycle.js';
import { newTaskId, type RecordBuilder } from './record-builder.js';
import { RecordFiles } from './record-files.js';
import { CHUNK_HASH_BYTES } from './record-index.js';

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
  /** What commits write through: the journal itself (a failing twin in unit tests). */
  appender?: JournalAppender;
  checkpointIdleMs: number;
  checkpointJournalBytes: number;
  /**
   * How long a stop may spend on checkpoints, one already being written and then the last (under
   * the daemon's 8 s stop deadline): rewriting a log of gigabytes takes longer, and it only
   * shortens the next start, since the journal is durable. 0: none.
   */
  stopCheckpointMs: number;
  /** Recent record lines kept in memory (a log this small is held whole). */
  cacheBytes: number;
}

/**
 * Data files up to this size are verified before serving (fast); larger ones are served at once
 * while a worker thread verifies them, and writes are refused if they do not verify.
 */
const VERIFY_BEFORE_SERVING_BYTES = 8 * 1024 * 1024;

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
  private readonly files = new RecordFiles();
  readonly journal: Journal;
  readonly checkpointer: Checkpointer;
  private readonly state: ChainState;
  private readonly commits: GroupCommit;
  /** Set when the background verification of the data file failed: writes are refused. */
  private damage: string | null = null;
  private readonly headFile: ChainPointFile;
  private headFileTimer: NodeJS.Timeout | null = null;
  private recordsSinceHeadSaved = 0;
  private readonly builder: RecordBuilder;

  private stagedHead: ChainPoint;
  private readonly stagedTasks = new Map<string, { finished: boolean; lastSeq: number }>();
  private closed = false;
  /** Durable groups whose callers are being answered; see `committed`. */
  private readonly unapplied: CommittedGroup[] = [];
  private settling = false;
  private readonly listeners = new Set<CommitListener>();
  /** Seq the cloud is known to hold; trimming keeps everything above. Null: no cloud. */
  private holdAbove: number | null = null;

  constructor(private readonly options: StoreOptions) {
    this.machineId = options.machineId;
    this.maxTasks = options.maxTasks;
    this.builder = options.builder;
    this.state = new ChainState(this.files, new ContentCache(options.cacheBytes), new HashSpill(options.dataDir, CHUNK_HASH_BYTES));
    this.journal = new Journal(options.dataDir, this.files);
    this.checkpointer = new Checkpointer({
      dataFile: options.dataFile,
      journal: this.journal,
      idleMs: options.checkpointIdleMs,
      journalBytes: options.checkpointJournalBytes,
      state: () => this.durable,
      header: () => ({ machineId: this.machineId, maxTasks: this.maxTasks }),
    });
    this.headFile = new ChainPointFile(join(options.dataDir, DURABLE_HEAD_FILE), 'durable head file');
    this.commits = new GroupCommit(options.appender ?? this.journal, options.dataDir, {
      committed: (group) => this.committed(group),
      failed: () => this.unstageAll(),
    });
    this.stagedHead = { ...this.state.head };
  }

  /**
   * Indexes the data file (rewriting an older format or layout first) and replays the journal
   * after it, checking every journal record's link; checks that they reach the head the head
   * file says was durable. A small data file is verified before serving, a large one meanwhile.
   * Throws StoreDamaged when they do not hold up.
   */
  async start(): Promise<void> {
    const { dataDir, dataFile } = this.options;
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    let opened: Awaited<ReturnType<typeof openDataFile>>;
    try {
      opened = await openDataFile(this.state, dataFile, this.options.cacheBytes);
    } catch (error) {
      if (error instanceof ChainBreak) {
        if (error.reason === 'unreadable file') throw new StoreDamaged(`${dataFile} is damaged: ${error.message} (${error.reason})`);
        throw new StoreDamaged(`${dataFile} does not verify${error.seq === null ? '' : ` at seq ${error.seq}`}: ${error.reason} (${error.message})`);
      }
      if (error instanceof NotARegularFile) throw new StoreDamaged(error.message);
      throw error;
    }
    if (opened) this.checkpointer.adoptFile(opened.fileId, opened.head.seq, opened.stats);
    this.replayJournal(!!opened);
    this.requireDurableHead();
    this.stagedHead = this.head;
    if (opened && opened.machineId !== this.machineId) {
      log.warn('the data file was written under another machine id; new tasks use this one', { file: dataFile, file_machine_id: opened.machineId, machine_id: this.machineId });
    }
    if (opened && !opened.verified) {
      if (opened.stats.size <= VERIFY_BEFORE_SERVING_BYTES) this.requireVerified(verifyDataFileOnDisk(dataFile));
      else void this.verifyInBackground();
    }
    // A missing file is written before serving (the watcher must find one); a replayed journal
    // is folded into the file soon after, off the start-up path.
    if (!opened) {
      this.checkpointer.noteViewChanged();
      await this.checkpoint();
    } else this.checkpointer.schedule();
  }

  /** Applies the journal records after the file's head, each checked against the chain so far. */
  private replayJournal(haveFile: boolean): void {
    const { dataFile } = this.options;
    const walker = new ChainWalker(this.state.head, sha256Hex);
    let first = true;
    try {
      const { droppedTailBytes } = this.journal.load((record, fileId, offset, length) => {
        if (first && !haveFile && record.seq !== 1) {
          throw new StoreDamaged(`${dataFile} is missing but the journal beside it starts at seq ${record.seq}: records 1..${record.seq - 1} are gone`);
        }
        first = false;
        if (record.seq <= this.state.head.seq) return;
        walker.accept(record);
        this.applyDurable(record, { fileId, offset, length });
      });
      if (droppedTailBytes) log.warn('cut a torn, never-acknowledged write off the journal', { bytes: droppedTailBytes });
    } catch (error) {
      if (error instanceof ChainBreak) {
        const where = error.seq === null ? '' : ` at seq ${error.seq}`;
        throw new StoreDamaged(`the journal beside ${dataFile} does not verify${where}: ${error.reason} (${error.message})`);
      }
      if (error instanceof NotARegularFile) throw new StoreDamaged(error.message);
      throw error;
    }
  }

  private requireVerified(report: VerifyReport): void {
    if (report.ok) return;
    const where = report.first_bad_seq === null ? '' : ` at seq ${report.first_bad_seq}`;
    throw new StoreDamaged(`${this.options.dataFile} does not verify${where}: ${report.reason} (${report.detail})`);
  }

  /** The full verification of a large data file, on a worker thread while the daemon serves. */
  private async verifyInBackground(): Promise<void> {
    const { dataFile } = this.options;
    log.info('verifying the data file in the background', { file: dataFile });
    const report = await this.verifyOnDisk().catch((error: unknown) => ({ ok: false, first_bad_seq: null, reason: 'unreadable file', detail: String(error) }) as VerifyReport);
    if (report.ok) {
      log.info('the data file verifies', { file: dataFile, records: report.checked });
      return;
    }
    const where = report.first_bad_seq === null ? '' : ` at seq ${report.first_bad_seq}`;
    this.damage = `${dataFile} does not verify${where}: ${report.reason} (${report.detail}); writes are refused. Restore it (from the cloud with --restore, or from a backup) and restart`;
    log.error('the data file does not verify; writes are refused', { file: dataFile, reason: report.reason, first_bad_seq: report.first_bad_seq ?? undefined });
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
    return { ...this.durable.head };
  }

  /** Head seq of the data file on disk. */
  get checkpointSeq(): number {
    return this.checkpointer.checkpointSeq;
  }

  hashAt(seq: number): string | undefined {
    return this.durable.hashAt(seq);
  }

  recordsAfter(seq: number, maxRecords: number, maxBytes: number): ChainRecord[] {
    return this.durable.recordsAfter(seq, maxRecords, maxBytes);
  }

  onCommit(listener: CommitListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Trimming keeps every record above `ackedSeq` until the cloud has it; null: no cloud. Set before start for the replay. */
  holdUnackedAbove(ackedSeq: number | null): void {
    this.settle();
    this.holdAbove = ackedSeq;
    if (this.trim()) this.checkpointer.schedule();
  }

  setMaxTasks(maxTasks: number): void {
    this.settle();
    this.maxTasks = maxTasks;
    if (this.trim()) this.checkpointer.schedule();
  }

  // Reads: durable state only.

  /** The kept task of this id (1001 when there is none). */
  task(taskId: string): TaskMeta {
    const task = this.durable.tasks.get(taskId);
    if (!task) throw new RpcError(ErrorCodes.TaskNotFound, `no task ${taskId}`, { task_id: taskId });
    return task;
  }

  /** A task's whole view, every step read from disk. */
  taskView(task: TaskMeta): TaskView {
    return this.durable.taskView(task);
  }

  /** Kept tasks, in creation order. */
  get tasks(): TaskMeta[] {
    return [...this.durable.tasks.values()];
  }

  get taskCount(): number {
    return this.durable.tasks.size;
  }

  get runningTasks(): TaskMeta[] {
    return this.durable.runningTasks;
  }

  /** The chain state reads go through (the paged views read task heads and steps from it). */
  get chain(): ChainState {
    return this.durable;
  }

  /** Why writes are refused: the last journal write error, or a data file that did not verify; null when all is well. */
  get storageError(): string | null {
    return this.damage ?? this.commits.storageError;
  }

  // Writes.

  /** `writer`: who the record says wrote it (the connection's peer); undefined when attribution is off. */
  async createTask(params: CreateTaskInput, writer: Writer | undefined): Promise<{ task_id: string; seq: number }> {
    let taskId = newTaskId();
    while (this.taskStatus(taskId)) taskId = newTaskId();
    const seq = await this.commit(this.builder.taskCreated(params, taskId, this.machineId, writer), taskId, false);
    return { task_id: taskId, seq };
  }

  async logStep(params: LogStepInput, writer: Writer | undefined): Promise<{ seq: number }> {
    this.requireRunning(params.task_id);
    return { seq: await this.commit(this.builder.stepLogged(params, writer), params.task_id, false) };
  }

  async completeTask(params: CompleteTaskInput, writer: Writer | undefined): Promise<{ seq: number }> {
    this.requireRunning(params.task_id);
    return { seq: await this.commit(this.builder.taskCompleted(params, writer), params.task_id, true) };
  }

  /** Appends one of the daemon's own records (not about a task), written by the daemon itself. */
  appendDaemonRecord(body: UnchainedRecord): Promise<number> {
    return this.commit(this.builder.daemonRecord(body));
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

  /** Chains a record after the staged head; resolves with its seq once it is durable. */
  private async commit(body: UnchainedRecord, taskId?: string, finishes = false): Promise<number> {
    if (this.closed) throw new RpcError(ErrorCodes.ShuttingDown);
    if (this.damage) throw new RpcError(ErrorCodes.StorageFailure, this.damage, { file: this.options.dataFile });
    const record = chainRecord(body, this.stagedHead.seq, this.stagedHead.hash, sha256Hex);
    this.stagedHead = { seq: record.seq, hash: record.hash };
    if (taskId) this.stagedTasks.set(taskId, { finished: finishes, lastSeq: record.seq });
    await this.commits.add(record);
    return record.seq;
  }

  /**
   * A group is durable: it is applied once its callers' answers are out. Those are written in the
   * microtasks its resolution starts; the tick queued from a microtask runs once they are all
   * done, still before any other message is read or timer fires. A read before then (every
   * accessor goes through `durable`) applies it at once.
   */
  private committed(group: CommittedGroup): void {
    if (this.unapplied.push(group) === 1) queueMicrotask(() => process.nextTick(() => this.settle()));
  }

  /** The durable state with every durable group applied. */
  private get durable(): ChainState {
    this.settle();
    return this.state;
  }

  /** Applies the durable groups not applied yet, in order; a call from inside (a listener, the head file) returns at once. */
  private settle(): void {
    if (this.settling) return;
    this.settling = true;
    try {
      for (let group = this.unapplied.shift(); group; group = this.unapplied.shift()) this.applyGroup(group);
    } finally {
      this.settling = false;
    }
  }

  private applyGroup({ records, lines, place }: CommittedGroup): void {
    let offset = place.offset;
    for (let i = 0; i < records.length; i++) {
      const length = Buffer.byteLength(lines[i]);
      // The place excludes the line's newline; the cached text keeps it (JSON.parse ignores it), so no copy is made.
      this.applyDurable(records[i], { fileId: place.fileId, offset, length: length - 1 }, lines[i]);
      offset += length;
    }
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
    this.checkpointer.schedule();
  }

  private saveHead(): void {
    if (this.headFileTimer) clearTimeout(this.headFileTimer);
    this.headFileTimer = null;
    this.recordsSinceHeadSaved = 0;
    this.headFile.save(this.durable.head);
  }

  /** A group failed: staging falls back to the durable state. */
  private unstageAll(): void {
    this.stagedTasks.clear();
    this.stagedHead = { ...this.durable.head };
  }

  /**
   * Applies a record that is on disk. Trimming follows each record that changes the task count,
   * so replaying a journal (or a restore) ends in exactly the view the live daemon had.
   */
  private applyDurable(record: ChainRecord, place: LinePlace, line?: string): void {
    this.state.apply(record, place, line);
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
    return this.checkpointer.checkpoint(force);
  }

  /**
   * Verifies what is on disk: the checkpoint and the journal, on a worker thread (it reads the
   * whole log), which checks the file's hashes against the index's and keeps no copy of them.
   */
  verifyOnDisk() {
    return this.checkpointer.withDiskLock(() => verifyDataFileInWorker(this.options.dataFile, this.durable.index.sharedHashes()));
  }

  /** Refuses new records, waits for the ones in flight. */
  async drain(): Promise<void> {
    this.closed = true;
    await this.commits.drain();
  }

  /** Drains, writes a last checkpoint, records the head and closes the journal. */
  async stop(): Promise<void> {
    await this.drain();
    // The budget covers a checkpoint already being written (the growth rule's) and the last one.
    this.checkpointer.stop(this.options.stopCheckpointMs);
    await this.checkpoint().catch(() => undefined);
    this.saveHead();
    await this.headFile.flush();
    this.journal.close();
    this.files.closeAll();
  }
}
