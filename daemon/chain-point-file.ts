import { Low } from 'lowdb';
import type { ChainPoint } from '../protocol/records.js';
import { NotARegularFile } from '../node/durable-files.js';
import { DurableJsonFile } from '../node/durable-json-file.js';
import { log } from '../node/log.js';

/**
 * One chain point ({seq, hash}) kept in a small JSON file of the data dir, through lowdb and its
 * durable adapter (temp file, fsync, rename, directory fsync). Saves are coalesced, newest wins:
 * while one write is in flight only the newest pending point is kept.
 */
export class ChainPointFile {
  private pending: ChainPoint | null = null;
  private writing: Promise<void> | null = null;
  private readonly file: DurableJsonFile<ChainPoint | null>;
  private readonly db: Low<ChainPoint | null>;

  constructor(
    readonly path: string,
    /** What the file is, for log lines. */
    private readonly role: string,
  ) {
    this.file = new DurableJsonFile(path, parseChainPoint);
    this.db = new Low(this.file, null);
  }

  /** The stored point, or null when there is none (or it is unreadable, which is logged). */
  load(): ChainPoint | null {
    try {
      return this.file.readSync();
    } catch (error) {
      if (error instanceof NotARegularFile) log.warn(`ignoring the ${this.role}`, { file: this.path, error: error.message });
      else log.warn(`ignoring a ${this.role} that cannot be read`, { file: this.path, error: (error as Error).message });
      return null;
    }
  }

  /** Records a new point; the write happens in the background. */
  save(point: ChainPoint): void {
    this.pending = { ...point };
    this.writing ??= this.writeLoop();
  }

  /** Resolves once every saved point is on disk. */
  async flush(): Promise<void> {
    await this.writing;
  }

  private async writeLoop(): Promise<void> {
    while (this.pending) {
      const point = this.pending;
      this.pending = null;
      try {
        this.db.data = point;
        await this.db.write();
      } catch (error) {
        log.warn(`cannot write the ${this.role}`, { file: this.path, error: (error as Error).message });
      }
    }
    this.writing = null;
  }
}

/** The point a file's text holds; throws when it is not `{seq, hash}`. */
function parseChainPoint(text: string): ChainPoint {
  let point: Partial<ChainPoint> | null = null;
  try {
    point = JSON.parse(text) as Partial<ChainPoint>;
  } catch {
    // not JSON: refused below
  }
  if (point && Number.isSafeInteger(point.seq) && (point.seq as number) >= 0 && typeof point.hash === 'string') return { seq: point.seq as number, hash: point.hash };
  throw new Error('it is not {seq, hash}');
}
