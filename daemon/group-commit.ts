import { journalLine } from '../protocol/data-file.js';
import { ErrorCodes, RpcError } from '../protocol/errors.js';
import type { ChainRecord } from '../protocol/records.js';
import { log } from '../node/log.js';

/** Where a group's lines went: the journal file (an id of the record files) and the offset of its first line. */
export interface JournalPlace {
  fileId: number;
  offset: number;
}

/** What group commit writes through: the journal, or a twin of it in tests. */
export interface JournalAppender {
  /** Writes and syncs on this thread; throws with nothing written when either fails. */
  appendNow(text: string, firstSeq: number, lastSeq: number): JournalPlace;
  /** The same with the sync in the thread pool; nothing else is appended before it settles. */
  append(text: string, firstSeq: number, lastSeq: number): Promise<JournalPlace>;
}

/** A durable group: its records in order, their journal lines, and where the first line starts. */
export interface CommittedGroup {
  records: ChainRecord[];
  lines: string[];
  place: JournalPlace;
}

export interface GroupCommitHandlers {
  /** A group is durable. Called before any of its callers is answered. */
  committed(group: CommittedGroup): void;
  /** A group failed: it and every group staged after it were refused. */
  failed(): void;
}

interface Group {
  records: ChainRecord[];
  lines: string[];
  /** Settles once the group is durable or refused: one promise a group, shared by its callers. */
  durable: Promise<void>;
  resolve: () => void;
  reject: (error: Error) => void;
}

/**
 * Group commit: the records of one turn of the event loop, or of every turn while the previous
 * group syncs, go out in one journal write and one fdatasync. A caller's promise resolves only
 * after its record is synced; if a write fails, that group and the one staged after it are
 * refused with a StorageFailure naming the directory and the errno.
 */
export class GroupCommit {
  private pending: Group | null = null;
  /** A group's fdatasync is running in the thread pool. */
  private syncing = false;
  /** The largest group of late, forgotten by one per group: above 1, more than one writer is busy. */
  private recentLargestGroup = 0;
  private drainWaiters: (() => void)[] = [];
  private lastStorageError: string | null = null;

  constructor(
    private readonly journal: JournalAppender,
    private readonly dataDir: string,
    private readonly handlers: GroupCommitHandlers,
  ) {}

  /** The last journal write error, while writing keeps failing; null once a write succeeds. */
  get storageError(): string | null {
    return this.lastStorageError;
  }

  /** Queues a chained record; resolves once it is durable (with the rest of its group). */
  add(record: ChainRecord): Promise<void> {
    let group = this.pending;
    if (!group) {
      const { promise, resolve, reject } = promiseWithResolvers();
      group = this.pending = { records: [], lines: [], durable: promise, resolve, reject };
      // Let every message read in this turn of the event loop join the group.
      if (!this.syncing) setImmediate(() => this.flush());
    }
    group.records.push(record);
    group.lines.push(journalLine(record));
    return group.durable;
  }

  /** Resolves once no group is pending or syncing. */
  drain(): Promise<void> {
    if (!this.syncing && !this.pending) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /**
   * Writes and syncs the pending group. A lone writer's record (a group of one, and no larger group
   * of late) syncs on this thread: nobody else is coming, and the thread pool's round trip would
   * cost as much as the sync. Any other group syncs in the thread pool while this thread reads,
   * checks and chains the next calls: a group that merely held every busy writer of late and
   * synced here (as one in five did at 32 clients) stopped the thread for the whole sync while the
   * other writers' calls waited in their sockets.
   */
  private flush(): void {
    const group = this.pending;
    if (this.syncing || !group) return;
    this.pending = null;
    const first = group.records[0].seq;
    const last = group.records[group.records.length - 1].seq;
    const loneWriter = group.records.length === 1 && this.recentLargestGroup <= 1;
    this.recentLargestGroup = Math.max(group.records.length, this.recentLargestGroup - 1);
    const text = group.lines.join('');
    let syncing: Promise<JournalPlace> | null = null;
    let place: JournalPlace | null = null;
    try {
      if (loneWriter) place = this.journal.appendNow(text, first, last);
      else syncing = this.journal.append(text, first, last);
    } catch (error) {
      this.failFrom(group, error as NodeJS.ErrnoException);
      return;
    }
    if (place) {
      this.committed(group, place);
      return;
    }
    this.syncing = true;
    (syncing as Promise<JournalPlace>).then(
      (place) => {
        this.syncing = false;
        this.committed(group, place);
        // The answers go out after this callback: the next group's sync starts first.
        this.flush();
      },
      (error: NodeJS.ErrnoException) => {
        this.syncing = false;
        this.failFrom(group, error);
      },
    );
  }

  private committed(group: Group, place: JournalPlace): void {
    this.handlers.committed({ records: group.records, lines: group.lines, place });
    if (this.lastStorageError) {
      log.info('journal writes work again', { dir: this.dataDir });
      this.lastStorageError = null;
    }
    group.resolve();
    this.wakeDrainWaiters();
  }

  /** The failed group fails with every group staged after it. */
  private failFrom(group: Group, error: NodeJS.ErrnoException): void {
    const failed = [group, ...(this.pending ? [this.pending] : [])];
    this.pending = null;
    this.handlers.failed();
    const code = error.code ?? 'EIO';
    const message = `could not write the journal in ${this.dataDir} (${code}): nothing was recorded; free space or fix permissions, then retry`;
    if (this.lastStorageError !== message) log.error('journal write failed; calls are refused until writing works again', { dir: this.dataDir, error: code });
    this.lastStorageError = message;
    const rpcError = new RpcError(ErrorCodes.StorageFailure, message, { errno: code, dir: this.dataDir });
    for (const each of failed) each.reject(rpcError);
    this.wakeDrainWaiters();
  }

  private wakeDrainWaiters(): void {
    if (this.syncing || this.pending) return;
    for (const wake of this.drainWaiters.splice(0)) wake();
  }
}

/** Promise.withResolvers, which Node 20 lacks. */
function promiseWithResolvers(): { promise: Promise<void>; resolve: () => void; reject: (error: Error) => void } {
  let resolve!: () => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<void>((done, fail) => {
    resolve = done;
    reject = fail;
  });
  return { promise, resolve, reject };
}
