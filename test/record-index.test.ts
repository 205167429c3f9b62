import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { RecordForm, RecordIndex, RecordKind } from '../daemon/record-index.js';
import { SharedSeqHashes } from '../node/shared-seq-hashes.js';

/** Enough seqs for three chunks of the index (65,536 seqs each) and part of a fourth. */
const SEQS = 200_000;
const hashOf = (seq: number) => createHash('sha256').update(String(seq)).digest('hex');
const locationOf = (seq: number) => ({ form: seq % 3 === 0 ? RecordForm.stepViewLine : RecordForm.recordLine, fileId: seq % 7, offset: seq * 1000 + 0.5 * 2 ** 33, length: seq % 5000, task: seq % 11 });

function filledIndex(baseSeq: number): RecordIndex {
  const index = new RecordIndex(baseSeq);
  for (let seq = baseSeq + 1; seq <= baseSeq + SEQS; seq++) index.push(seq, hashOf(seq), seq % 2 ? RecordKind.stepLogged : RecordKind.taskCreated, locationOf(seq));
  return index;
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

  it('shares its hashes in place: the verifier reads them and keeps only those it is told differ', () => {
    const index = filledIndex(0);
    index.dropThrough(70_000);
    const hashes = new SharedSeqHashes(index.sharedHashes(), 5);
    for (let seq = 5; seq <= SEQS; seq++) hashes.put(seq, seq === 150_000 ? hashOf(-1) : hashOf(seq));
    for (const seq of [5, 65_536, 65_537, 131_072, 149_999, SEQS]) expect(hashes.get(seq)).toBe(hashOf(seq));
    expect(hashes.get(150_000)).toBe(hashOf(-1));
  });
});
