import { OwnSeqHashes, type SeqHashes } from '../protocol/data-file-v2-verify.js';
import { SpilledHashReader, type SpilledChunk } from './spilled-hashes.js';

/**
 * A daemon's record hashes for seqs firstSeq..lastSeq, as its index holds them: 32 bytes a seq in
 * chunks of `chunkRecords` seqs, each on a SharedArrayBuffer that a worker thread reads in place,
 * or spilled to a file descriptor of the process. The bytes of a seq are written once, before it
 * is shared, and do not change while the verification runs.
 */
export interface SharedHashes {
  firstSeq: number;
  lastSeq: number;
  chunkRecords: number;
  chunks: (SharedArrayBuffer | SpilledChunk)[];
}

const HASH_BYTES = 32;

/**
 * The verifier's SeqHashes over a daemon's shared hashes: an entry hash of a seq they cover is
 * compared with them and not copied (a log of 1,000,000 records would take 32 MB more); only one
 * that differs (the file was changed since the daemon read it) is kept, and so is the hash of a seq
 * they do not cover (dropped from the index since the file was written). The verdict is the one
 * of the verifier keeping every hash itself.
 */
export class SharedSeqHashes implements SeqHashes {
  private readonly chunks: (Buffer | SpilledChunk)[];
  private readonly spilled = new SpilledHashReader();
  private readonly uncovered: OwnSeqHashes;
  private readonly differing = new Map<number, string>();

  constructor(
    private readonly shared: SharedHashes,
    firstSeq: number,
  ) {
    this.chunks = shared.chunks.map((chunk) => (chunk instanceof SharedArrayBuffer ? Buffer.from(chunk) : chunk));
    this.uncovered = new OwnSeqHashes(firstSeq);
  }

  put(seq: number, hash: string): void {
    if (!this.covers(seq)) this.uncovered.put(seq, hash);
    else if (this.sharedHash(seq) !== hash) this.differing.set(seq, hash);
  }

  get(seq: number): string {
    if (!this.covers(seq)) return this.uncovered.get(seq);
    return this.differing.get(seq) ?? this.sharedHash(seq);
  }

  private sharedHash(seq: number): string {
    const i = seq - this.shared.firstSeq;
    const chunk = this.chunks[Math.floor(i / this.shared.chunkRecords)];
    const slot = i % this.shared.chunkRecords;
    if (!Buffer.isBuffer(chunk)) return this.spilled.hashAt(chunk, slot);
    return chunk.toString('hex', slot * HASH_BYTES, (slot + 1) * HASH_BYTES);
  }

  private covers(seq: number): boolean {
    return seq >= this.shared.firstSeq && seq <= this.shared.lastSeq;
  }
}
