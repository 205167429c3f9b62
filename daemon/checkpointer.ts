import type { Stats } from 'node:fs';
import { log } from '../node/log.js';
import { sha256Hex } from '../node/sha256.js';
import type { ChainState } from './chain-state.js';
import { CheckpointWriter, type CheckpointHeader, type WrittenCheckpoint } from './checkpoint-writer.js';
import type { Journal } from './journal.js';

export interface CheckpointerOptions {
  dataFile: string;
  journal: Journal;
  /** Consider a checkpoint after this long without commits. */
  idleMs: number;
  /** ...or at once when the journal has grown this much (and by GROWTH_FRACTION of the file) since the last one. */
  journalBytes: number;
  state: () => ChainState;
  header: () => CheckpointHeader;
}

/**
 * A rewrite at once once the journal holds this fraction of the data file's size: every byte is
 * then rewritten a bounded number of times (about 1 + 1/fraction) however large the log grows.
 */
const GROWTH_FRACTION = 0.5;
/** At idle a rewrite is worth it when the file is small, or the journal is this fraction of it. */
const IDLE_SMALL_FILE_BYTES = 16 * 1024 * 1024;
const IDLE_FRACTION = 1 / 8;
const RETRY_MS = 5000;
/** How many of our own recent writes to remember, to tell them from foreign edits. */
const REMEMBERED_WRITES = 8;

/**
 * Writes task_history.json from the chain state (when, the streamed write, then pointing the index
 * at the new file and deleting the journal segments it covers) under a disk lock that on-disk
 * verification and the tamper watch share, and knows its own writes, so that the tamper watch can
 * tell them from foreign ones.
 */
export class Checkpointer {
  /** Head seq of the data file on disk. */
  checkpointSeq = 0;
  /** Bytes of the data file on disk. */
  fileSize = 0;
  /** The record-files id of the data file records point into, null before the first. */
  private fileId: number | null = null;
  private viewChanged = false;
  private ownWrite: Pick<WrittenCheckpoint, 'ino' | 'size' | 'mtimeMs'> | null = null;
  private readonly ownDigests: string[] = [];
  private timer: NodeJS.Timeout | null = null;
  /** The checkpoint the journal's growth asked for, until it is written: growth asks again at every commit meanwhile. */
  private growthCheckpoint: Promise<void> | null = null;
  private diskLock: Promise<unknown> = Promise.resolve();
  private stopped = false;
  /** Aborted once a stop's budget for checkpoints is spent. */
  private readonly stopDeadline = new AbortController();

  constructor(private readonly options: CheckpointerOptions) {}

  /** The data file start-up indexed: its head, size and identity, and the id its records are read by. */
  adoptFile(fileId: number, headSeq: number, stats: Stats): void {
    this.fileId = fileId;
    this.checkpointSeq = headSeq;
    this.fileSize = stats.size;
    this.ownWrite = { ino: stats.ino, size: stats.size, mtimeMs: stats.mtimeMs };
  }

  /** The next checkpoint must be written even at the same head (trimming changed the view). */
  noteViewChanged(): void {
    this.viewChanged = true;
  }

  /** A checkpoint once commits pause (when worth it), or at once when the journal has grown past its bound. */
  schedule(): void {
    if (this.stopped) return;
    const journalBytes = this.options.journal.bytesSinceCheckpoint;
    if (journalBytes >= Math.max(this.options.journalBytes, this.fileSize * GROWTH_FRACTION)) {
      this.growthCheckpoint ??= this.checkpoint()
        .catch(() => undefined)
        .finally(() => (this.growthCheckpoint = null));
      return;
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      const worthIt = this.fileSize <= IDLE_SMALL_FILE_BYTES || this.options.journal.bytesSinceCheckpoint >= this.fileSize * IDLE_FRACTION;
      if (!worthIt) return;
      this.checkpoint().catch(() => {
        this.timer ??= setTimeout(() => this.schedule(), RETRY_MS);
      });
    }, this.options.idleMs);
  }

  /**
   * Writes the data file from the state, then points the index at it and drops the journal
   * segments it covers. `force` rewrites it even when nothing changed, checking every copied
   * record against its hash (after a foreign edit or deletion).
   */
  checkpoint(force = false): Promise<void> {
    const { signal } = this.stopDeadline;
    return this.withDiskLock(async () => {
      const state = this.options.state();
      if (!force && state.head.seq === this.checkpointSeq && !this.viewChanged) return;
      this.options.journal.requestRotation();
      this.viewChanged = false;
      const writer = new CheckpointWriter(state, this.options.dataFile, this.options.header(), force, signal);
      const startedAt = performance.now();
      const journalBytes = this.options.journal.bytesSinceCheckpoint;
      let written: WrittenCheckpoint;
      try {
        written = await writer.write();
      } catch (error) {
        this.viewChanged = true;
        if (signal?.aborted) {
          log.info('left the checkpoint unwritten to stop in time: the journal holds every record, and the next start replays it', { file: this.options.dataFile, journal_bytes: journalBytes });
          throw error;
        }
        log.warn('could not write the checkpoint; every record stays in the journal, retrying', { file: this.options.dataFile, error: (error as NodeJS.ErrnoException).code ?? String(error) });
        throw error;
      }
      writer.install(written);
      if (this.fileId !== null) state.files.close(this.fileId);
      this.fileId = written.fileId;
      this.ownWrite = { ino: written.ino, size: written.size, mtimeMs: written.mtimeMs };
      this.ownDigests.push(written.sha256);
      if (this.ownDigests.length > REMEMBERED_WRITES) this.ownDigests.shift();
      this.checkpointSeq = written.head.seq;
      this.fileSize = written.size;
      this.options.journal.deleteCoveredSegments(written.head.seq);
      state.compact();
      log.debug('wrote the data file', { file: this.options.dataFile, head_seq: written.head.seq, bytes: written.size, journal_bytes: journalBytes, ms: Math.round(performance.now() - startedAt) });
    });
  }

  /** Runs fn while no checkpoint is being written (and none starts). */
  withDiskLock<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.diskLock.then(fn, fn);
    this.diskLock = run.catch(() => undefined);
    return run;
  }

  /** True when the data file is still exactly the inode, size and mtime of our last write. */
  isOwnWrite(current: Stats): boolean {
    const own = this.ownWrite;
    return !!own && current.ino === own.ino && current.size === own.size && current.mtimeMs === own.mtimeMs;
  }

  /** Whether this content is one the checkpointer itself wrote recently. */
  isOwnContent(text: string): boolean {
    return this.ownDigests.includes(sha256Hex(text));
  }

  /**
   * No more scheduled checkpoints; one written explicitly still runs, and so does one being
   * written, until `budgetMs` from now: then each is abandoned (no temp file is left).
   */
  stop(budgetMs: number): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (budgetMs === 0) this.stopDeadline.abort();
    else setTimeout(() => this.stopDeadline.abort(), budgetMs).unref();
  }
}
