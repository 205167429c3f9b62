import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileDurably } from '../node/durable-files.js';
import type { ChainPoint } from '../protocol/records.js';
import { log } from '../node/log.js';

export const CLOUD_CURSOR_FILE = 'cloud_cursor.json';

/**
 * The newest {seq, hash} the cloud acknowledged, kept in `<data dir>/cloud_cursor.json` so that
 * trimming holds unpushed records from the moment the daemon starts. On reconnect the cloud's
 * `head` is authoritative, so writes are coalesced (newest wins) and a lagging file is only
 * conservative: it holds more than needed, never less.
 */
export class CloudCursor {
  readonly path: string;
  private pending: ChainPoint | null = null;
  private writing: Promise<void> | null = null;

  constructor(dataDir: string) {
    this.path = join(dataDir, CLOUD_CURSOR_FILE);
  }

  /** The stored cursor, or null when there is none (or it is unreadable, which is logged). */
  load(): ChainPoint | null {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') log.warn('cannot read the cloud cursor', { file: this.path, error: (error as Error).message });
      return null;
    }
    try {
      const point = JSON.parse(text) as Partial<ChainPoint>;
      if (Number.isSafeInteger(point.seq) && (point.seq as number) >= 0 && typeof point.hash === 'string') {
        return { seq: point.seq as number, hash: point.hash };
      }
    } catch {
      // reported below
    }
    log.warn('ignoring a cloud cursor that is not {seq, hash}; the cloud head decides', { file: this.path });
    return null;
  }

  /** Records a new acknowledged point; the write happens in the background. */
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
        log.warn('cannot write the cloud cursor', { file: this.path, error: (error as Error).message });
      }
    }
    this.writing = null;
  }
}
