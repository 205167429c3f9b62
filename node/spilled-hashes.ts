import { readSync } from 'node:fs';

/** A chunk of record hashes written out to a file: 32 bytes a seq from `position` on. */
export interface SpilledChunk {
  fd: number;
  position: number;
}

const HASH_BYTES = 32;
/** Hashes read from a spilled chunk at once: walks in seq order, and tasks read step by step, stay in one block. */
const BLOCK_HASHES = 2048;

/** Reads hashes of spilled chunks through one cached block of 64 KiB. */
export class SpilledHashReader {
  private readonly block = Buffer.allocUnsafe(BLOCK_HASHES * HASH_BYTES);
  private blockFd = -1;
  private blockPosition = -1;

  /** The hash of the `slot`-th seq of a spilled chunk. */
  hashAt(chunk: SpilledChunk, slot: number): string {
    const first = slot - (slot % BLOCK_HASHES);
    const position = chunk.position + first * HASH_BYTES;
    if (this.blockFd !== chunk.fd || this.blockPosition !== position) {
      this.forget();
      let filled = 0;
      while (filled < this.block.length) {
        const read = readSync(chunk.fd, this.block, filled, this.block.length - filled, position + filled);
        if (read === 0) break;
        filled += read;
      }
      if (filled < (slot - first + 1) * HASH_BYTES) throw new Error(`the spilled record hashes end before seq slot ${slot} (file descriptor ${chunk.fd}, position ${position})`);
      this.blockFd = chunk.fd;
      this.blockPosition = position;
    }
    const at = (slot - first) * HASH_BYTES;
    return this.block.toString('hex', at, at + HASH_BYTES);
  }

  /** Drops the cached block: its place in the file is about to hold other hashes. */
  forget(): void {
    this.blockFd = -1;
    this.blockPosition = -1;
  }
}
