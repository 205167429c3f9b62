import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { HashSpill } from '../daemon/hash-spill.js';
import { CHUNK_HASH_BYTES, RecordForm, RecordIndex, RecordKind } from '../daemon/record-index.js';
import { SharedSeqHashes } from '../node/shared-seq-hashes.js';
import { tempDir } from './processes.js';

/** Enough seqs for three chunks of the index (65,536 seqs each) and part of a fourth. */
const SEQS = 200_000;
const hashOf = (seq: number) => createHash('sha256').update(String(seq)).digest('hex');
const locationOf = (seq: number) => ({ form: seq % 3 === 0 ? RecordForm.stepViewLine : RecordForm.recordLine, fileId: seq % 7, offset: seq * 1000 + 0.5 * 2 ** 33, length: seq % 5000, task: seq % 11 });

function filledIndex(baseSeq: number, spill: HashSpill | null = null, seqs = SEQS): RecordIndex {
  const index = new RecordIndex(baseSeq, spill);
  for (let seq = baseSeq + 1; seq <= baseSeq + seqs; seq++) index.push(seq, hashOf(seq), seq % 2 ? RecordKind.stepLogged : RecordKind.taskCreated, locationOf(seq));
  return index;
}

function spillIn(dir: string): HashSpill {
  return new HashSpill(dir, CHUNK_HASH_BYTES);
}

describe('the record index', () => {
  it('holds every seq\'s hash, kind and place across its chunks, and a range of forms that spans them', () => {
    const index = filledIndex(10);
    expect(index.lastSeq).toBe(10 + SEQS);
    for (const seq of [11, 65_546, 65_547, 131_082, 131_083, 10 + SEQS]) {
      expect(index.hashAt(seq)).toBe(hashOf(seq));
      expect(index.location(seq)).toEqual(locationOf(seq));
      expect(index.kindOf(seq)).toBe(seq % 2 ? RecordKind.stepLogged : RecordKind.taskCreated);
    }
    expect(index.has(10)).toBe(false);
    expect(index.hashAt(11 + SEQS)).toBeUndefined();
    const forms = index.formsOf(65_000, 140_000);
    expect(forms.length).toBe(75_001);
    for (const seq of [65_000, 65_546, 65_547, 131_083, 140_000]) expect(forms[seq - 65_000]).toBe(locationOf(seq).form);
    expect(() => index.push(12 + SEQS, hashOf(1), RecordKind.daemon, locationOf(1))).toThrow(/does not follow/);
  });

  it('drops only whole chunks at or below the seq, and keeps the last', () => {
    const index = filledIndex(0);
    index.dropThrough(65_535);
    expect(index.has(1)).toBe(true);
    index.dropThrough(140_000);
    expect([index.has(131_072), index.has(131_073)]).toEqual([false, true]);
    expect(index.hashAt(131_073)).toBe(hashOf(131_073));
    index.dropThrough(SEQS);
    expect([index.has(196_608), index.has(196_609), index.lastSeq]).toEqual([false, true, SEQS]);
    index.push(SEQS + 1, hashOf(SEQS + 1), RecordKind.daemon, locationOf(SEQS + 1));
    expect(index.hashAt(SEQS + 1)).toBe(hashOf(SEQS + 1));
  });

  it('moves a checkpoint\'s seqs to their new lines across chunks, leaving tasks, stubs, unmoved and dropped seqs as they were', () => {
    const index = filledIndex(0);
    index.dropThrough(65_536);
    index.makeStub(70_000);
    const firstSeq = 65_000;
    const count = 140_000;
    const forms = new Uint8Array(count).fill(RecordForm.stepViewLine);
    forms[80_000 - firstSeq] = RecordForm.stub; // not written by the checkpoint
    const offsets = Float64Array.from({ length: count }, (_, i) => 2 ** 33 + i * 10);
    const lengths = Uint32Array.from({ length: count }, (_, i) => 100 + i);
    index.relocateAll(firstSeq, 99, forms, offsets, lengths);
    const moved = (seq: number) => ({ form: RecordForm.stepViewLine, fileId: 99, offset: offsets[seq - firstSeq], length: lengths[seq - firstSeq], task: locationOf(seq).task });
    // The range runs from below the index's first seq to past its last: those are skipped.
    for (const seq of [65_537, 65_538, 131_072, 131_073, SEQS]) expect(index.location(seq)).toEqual(moved(seq));
    expect(index.location(70_000)).toEqual({ ...locationOf(70_000), form: RecordForm.stub });
    expect(index.location(80_000)).toEqual(locationOf(80_000));
    expect([index.has(65_536), index.lastSeq]).toEqual([false, SEQS]);
  });

  it('spills the hashes of all but its newest two chunks to an unlinked file, reads them back, and reuses the slots of dropped chunks', () => {
    const dir = tempDir('taskhistory-index-');
    const spill = spillIn(dir);
    const index = filledIndex(10, spill);
    const spilled = index.sharedHashes().chunks.map((chunk) => !(chunk instanceof SharedArrayBuffer));
    expect(spilled).toEqual([true, true, false, false]);
    expect(readdirSync(dir)).toEqual([]);
    for (const seq of [11, 40_000, 65_546, 65_547, 131_082, 131_083, 10 + SEQS, 12, 65_545]) expect(index.hashAt(seq)).toBe(hashOf(seq));
    index.dropThrough(70_000);
    const more = SEQS + 3 * 65_536;
    for (let seq = 11 + SEQS; seq <= 10 + more; seq++) index.push(seq, hashOf(seq), RecordKind.stepLogged, locationOf(seq));
    for (const seq of [65_547, 131_082, 200_000, 262_154, 10 + more]) expect(index.hashAt(seq)).toBe(hashOf(seq));
    const positions = index.sharedHashes().chunks.flatMap((chunk) => (chunk instanceof SharedArrayBuffer ? [] : [chunk.position / CHUNK_HASH_BYTES]));
    expect(positions.sort()).toEqual([0, 1, 2, 3]);
    // A second index on the same spill (the state started again) takes only free slots.
    index.release();
    const next = filledIndex(0, spill, 3 * 65_536);
    expect(next.sharedHashes().chunks[0]).toEqual({ fd: expect.any(Number), position: 3 * CHUNK_HASH_BYTES });
    expect(next.hashAt(1)).toBe(hashOf(1));
  });

  it('shares its hashes, in place and spilled: the verifier reads them and keeps only those it is told differ', () => {
    const index = filledIndex(0, spillIn(tempDir('taskhistory-index-')));
    index.dropThrough(70_000);
    const hashes = new SharedSeqHashes(index.sharedHashes(), 5);
    for (let seq = 5; seq <= SEQS; seq++) hashes.put(seq, seq === 150_000 ? hashOf(-1) : hashOf(seq));
    for (const seq of [5, 65_536, 65_537, 131_072, 149_999, SEQS]) expect(hashes.get(seq)).toBe(hashOf(seq));
    expect(hashes.get(150_000)).toBe(hashOf(-1));
  });
});
