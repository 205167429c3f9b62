import { openSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { log } from '../node/log.js';
import { SpilledHashReader, type SpilledChunk } from '../node/spilled-hashes.js';

/** Name of the spill file while it is created; it is unlinked at once and lives only as an open descriptor. */
const SPILL_FILE = 'task_history.hashes.spill';

/**
 * Where the record index puts the hashes of its older chunks, so that memory does not hold 32
 * bytes for every record: one file of fixed-size slots, unlinked as soon as it is open and held
 * for the life of the process (a crash leaves nothing; the next start rebuilds the index from the
 * data file), never synced (derived data), its slots reused as chunks are dropped. Reads go
 * through the page cache, not the process's memory. If the file cannot be made or written (a full
 * disk), chunks stay in memory.
 */
export class HashSpill {
  private fd: number | null = null;
  private failed = false;
  private slots = 0;
  private readonly freeSlots: number[] = [];
  readonly reader = new SpilledHashReader();

  constructor(
    private readonly dataDir: string,
    private readonly slotBytes: number,
  ) {}

  /** Writes a chunk's hashes to a slot; null when they must stay in memory. */
  spill(hashes: Buffer): SpilledChunk | null {
    const fd = this.open();
    if (fd === null) return null;
    const slot = this.freeSlots.pop() ?? this.slots++;
    const position = slot * this.slotBytes;
    this.reader.forget();
    try {
      for (let written = 0; written < hashes.length; ) written += writeSync(fd, hashes, written, hashes.length - written, position + written);
    } catch (error) {
      this.freeSlots.push(slot);
      log.warn('could not spill record hashes to disk; they stay in memory', { file: join(this.dataDir, SPILL_FILE), error: (error as NodeJS.ErrnoException).code ?? String(error) });
      return null;
    }
    return { fd, position };
  }

  /** The slot of a dropped chunk may hold another's. */
  free(chunk: SpilledChunk): void {
    this.freeSlots.push(chunk.position / this.slotBytes);
  }

  private open(): number | null {
    if (this.fd !== null || this.failed) return this.fd;
    const path = join(this.dataDir, SPILL_FILE);
    try {
      this.fd = openSync(path, 'w+', 0o600);
      unlinkSync(path);
    } catch (error) {
      this.failed = true;
      log.warn('could not create the file for spilled record hashes; they stay in memory', { file: path, error: (error as NodeJS.ErrnoException).code ?? String(error) });
    }
    return this.fd;
  }
}
