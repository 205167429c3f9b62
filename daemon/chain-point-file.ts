import type { ChainPoint } from '../protocol/records.js';
import { NotARegularFile, readRegularFileSync, writeFileDurably } from '../node/durable-files.js';
import { log } from '../node/log.js';

/**
 * One chain point ({seq, hash}) kept in a small JSON file of the data dir, written durably
 * (temp file, fsync, rename, directory fsync). Saves are coalesced, newest wins: while one write
 * is in flight only the newest pending point is kept.
 */
export class ChainPointFile {
  private pending: ChainPoint | null = null;
  private writing: Promise<void> | null = null;

  constructor(
    readonly path: string,
    /** What the file is, for log lines. */
    private readonly role: string,
  ) {}

  /** The stored point, or null when there is none (or it is unreadable, which is logged). */
  load(): ChainPoint | null {
    let text: string;
    try {
      text = readRegularFileSync(this.path).toString('utf8');
    } catch (error) {
      if (error instanceof NotARegularFile) log.warn(`ignoring the ${this.role}`, { file: this.path, error: error.message });
      else if ((error as NodeJS.ErrnoException).code !== 'ENOENT') log.warn(`cannot read the ${this.role}`, { file: this.path, error: (error as Error).message });
      return null;
    }
    const point = parseChainPoint(text);
    if (!point) log.warn(`ignoring a ${this.role} that is not {seq, hash}`, { file: this.path });
    return point;
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
        await writeFileDurably(this.path, `${JSON.stringify(point)}\n`);
      } catch (error) {
        log.warn(`cannot write the ${this.role}`, { file: this.path, error: (error as Error).message });
      }
    }
    this.writing = null;
  }
}

export function parseChainPoint(text: string): ChainPoint | null {
  try {
    const point = JSON.parse(text) as Partial<ChainPoint>;
    if (Number.isSafeInteger(point.seq) && (point.seq as number) >= 0 && typeof point.hash === 'string') return { seq: point.seq as number, hash: point.hash };
  } catch {
    // not JSON
  }
  return null;
}
