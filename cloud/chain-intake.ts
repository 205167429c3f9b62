import { ChainBreak, ChainWalker, contentProblem, deepEqual } from '../protocol/chain-verify.js';
import { sha256Hex } from '../node/sha256.js';
import type { ChainPoint, ChainRecord } from '../protocol/records.js';

/**
 * Decides what a pushed batch adds to the chain the endpoint holds for a machine. A batch may
 * start at or below the held head: those records must be the very records held (they are then
 * acknowledged again, not stored twice); the rest must continue the chain.
 */
export type MismatchReason = 'gap' | 'fork' | 'altered';

export class BatchRefused extends Error {
  constructor(
    readonly reason: MismatchReason,
    readonly seq: number,
    detail: string,
  ) {
    super(detail);
  }
}

/** Reads `count` held records starting after `afterSeq`. */
export type HeldReader = (afterSeq: number, count: number) => Promise<ChainRecord[]>;

/** The records of `batch` that are new; throws BatchRefused when the batch does not continue `head`. */
export async function newRecordsOf(batch: ChainRecord[], head: ChainPoint, readHeld: HeldReader): Promise<ChainRecord[]> {
  if (batch.length === 0) return [];
  const first = batch[0].seq;
  batch.forEach((record, index) => {
    if (record.seq !== first + index) {
      throw new BatchRefused('gap', first + index, `the batch is not consecutive: seq ${record.seq} where ${first + index} was expected`);
    }
  });
  if (first < 1 || first > head.seq + 1) {
    throw new BatchRefused('gap', head.seq + 1, `the batch starts at seq ${first}; the next seq is ${head.seq + 1}`);
  }
  const overlap = batch.filter((record) => record.seq <= head.seq);
  const held = overlap.length > 0 ? await readHeld(first - 1, overlap.length) : [];
  overlap.forEach((record, index) => checkSameAsHeld(record, held[index]));

  const fresh = batch.slice(overlap.length);
  const walker = new ChainWalker({ ...head }, sha256Hex);
  for (const record of fresh) {
    const problem = contentProblem(record, sha256Hex);
    if (problem) throw new BatchRefused('altered', record.seq, `seq ${record.seq}: ${problem}`);
    try {
      walker.accept(record);
    } catch (error) {
      if (!(error instanceof ChainBreak)) throw error;
      // Seqs are consecutive and content is sound, so only the link to the previous record can break.
      throw new BatchRefused('fork', record.seq, error.message);
    }
  }
  return fresh;
}

function checkSameAsHeld(record: ChainRecord, held: ChainRecord | undefined): void {
  const problem = contentProblem(record, sha256Hex);
  if (problem) throw new BatchRefused('altered', record.seq, `seq ${record.seq}: ${problem}`);
  if (!held || held.hash !== record.hash) {
    throw new BatchRefused('fork', record.seq, `seq ${record.seq} differs from the record already held for that seq`);
  }
  if (!deepEqual(held, record)) {
    throw new BatchRefused('altered', record.seq, `seq ${record.seq} has the held record's hash but different content`);
  }
}
