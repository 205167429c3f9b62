import type { Stats } from 'node:fs';
import { Low } from 'lowdb';
import type { DataFile } from '../protocol/data-file.js';
import { log } from '../node/log.js';
import { DurableJsonFile } from './checkpoint-file.js';
import type { Journal } from './journal.js';

export interface CheckpointerOptions {
  dataFile: string;
  journal: Journal;
  /** Write the checkpoint after this long without commits. */
  idleMs: number;
  /** ...or at once when the journal has grown this much since the last checkpoint. */
  journalBytes: number;
}

/** The durable state as a data file, taken when a checkpoint is written. */
export type Snapshot = () => DataFile;

const RETRY_MS = 5000;

/**
 * Writes task_history.json from the durable state (schedule, atomic durable write, deleting the
 * journal segments it covers) under a disk lock that on-disk verification and the tamper watch
 * share, and knows its own writes, so that the tamper watch can tell them from foreign ones.
 */
export class Checkpointer {
  /** Head seq of the data file on disk. */
  checkpointSeq = 0;
  /** Set when trimming makes the file differ from the state at the same head. */
  private viewChanged = false;
  private readonly file: DurableJsonFile;
  private readonly db: Low<DataFile>;
  private timer: NodeJS.Timeout | null = null;
  private diskLock: Promise<unknown> = Promise.resolve();
  private stopped = false;

  constructor(private readonly options: CheckpointerOptions) {
    this.file = new DurableJsonFile(options.dataFile);
    this.db = new Low(this.file, null as unknown as DataFile);
  }

  /** The data file on disk, or null when there is none; throws ChainBreak when it is unreadable. */
  async readCheckpoint(): Promise<DataFile | null> {
    const doc = await this.file.read();
    this.checkpointSeq = doc?.head.seq ?? 0;
    return doc;
  }

  /** The next checkpoint must be written even at the same head (trimming changed the view). */
  noteViewChanged(): void {
    this.viewChanged = true;
  }

  /** A checkpoint once commits pause, or at once when the journal has grown past its bound. */
  schedule(snapshot: Snapshot): void {
    if (this.stopped) return;
    if (this.options.journal.bytesSinceCheckpoint >= this.options.journalBytes) {
      void this.checkpoint(snapshot).catch(() => undefined);
      return;
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.checkpoint(snapshot).catch(() => {
        this.timer ??= setTimeout(() => this.schedule(snapshot), RETRY_MS);
      });
    }, this.options.idleMs);
  }

  /**
   * Writes the data file from the snapshot, then drops the journal segments it covers. `force`
   * rewrites it even when nothing changed (after a foreign edit or deletion).
   */
  checkpoint(snapshot: Snapshot, force = false): Promise<void> {
    return this.withDiskLock(async () => {
      const doc = snapshot();
      if (!force && doc.head.seq === this.checkpointSeq && !this.viewChanged) return;
      this.options.journal.requestRotation();
      this.db.data = doc;
      try {
        await this.db.write();
      } catch (error) {
        log.warn('could not write the checkpoint; every record stays in the journal, retrying', { file: this.options.dataFile, error: (error as NodeJS.ErrnoException).code ?? String(error) });
        throw error;
      }
      this.checkpointSeq = doc.head.seq;
      this.viewChanged = false;
      this.options.journal.deleteCoveredSegments(doc.head.seq);
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
    return this.file.isOwnStat(current);
  }

  /** Whether this content is one the checkpointer itself wrote recently. */
  isOwnContent(text: string): boolean {
    return this.file.isOwn(text);
  }

  /** No more scheduled checkpoints; one written explicitly still runs. */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
