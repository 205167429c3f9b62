import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ChainBreak } from '../protocol/chain-verify.js';
import { journalLine, journalSegmentName } from '../protocol/data-file.js';
import type { ChainRecord } from '../protocol/records.js';
import { parseJournal, readJournalSegments, scanJournalSegments, type JournalSegmentInfo } from '../node/journal-files.js';
import { ChainFixture } from './chain-fixture.js';
import { tempDir } from './processes.js';

/** Journal segments streamed by scanJournalSegments follow the same rules as parseJournal on the whole text. */

const f = new ChainFixture();
f.createTask('t');
for (let i = 1; i <= 30; i++) f.logStep('t', i, { output: `${i} ${'ü'.repeat(i * 5000)}` });
const records = f.records;
const text = (from: number, to: number) => records.slice(from, to).map(journalLine).join('');

function dirWith(segments: [firstSeq: number, content: Buffer | string][]): string {
  const dir = join(tempDir('taskhistory-journal-'), 'data');
  mkdirSync(dir);
  for (const [seq, content] of segments) writeFileSync(join(dir, journalSegmentName(seq)), content);
  return dir;
}

function scan(dir: string): { seen: { record: ChainRecord; segment: JournalSegmentInfo; offset: number; length: number }[]; segments: JournalSegmentInfo[] } {
  const seen: { record: ChainRecord; segment: JournalSegmentInfo; offset: number; length: number }[] = [];
  const segments = scanJournalSegments(dir, (record, segment, offset, length) => seen.push({ record, segment, offset, length }));
  return { seen, segments };
}

describe('scanJournalSegments', () => {
  it('streams every record with where its line lies, over preallocated zeros, as parseJournal reads them', () => {
    const second = Buffer.concat([Buffer.from(text(10, 31)), Buffer.alloc(3 << 20)]);
    const dir = dirWith([[1, text(0, 10)], [11, second]]);
    const { seen, segments } = scan(dir);
    expect(seen.map((s) => s.record)).toEqual(records);
    for (const { record, segment, offset, length } of seen) {
      expect(readFileSync(segment.path).subarray(offset, offset + length + 1).toString()).toBe(journalLine(record));
    }
    const parsed = parseJournal(second.toString('utf8'));
    expect(segments[1]).toMatchObject({ firstSeq: 11, size: second.length, nonZeroEnd: Buffer.byteLength(text(10, 31)), parsed: { validBytes: parsed.validBytes, tornTail: false } });
    expect(readJournalSegments(dir).map((s) => s.parsed.records.length)).toEqual([10, 21]);
  });

  it('counts a torn last line, or bytes written past the zeros, as torn in the newest segment only', () => {
    const full = text(0, 5);
    const torn = `${full}${journalLine(records[5]).slice(0, 40)}`;
    expect(scan(dirWith([[1, torn]])).segments[0].parsed).toEqual({ validBytes: Buffer.byteLength(full), tornTail: true });
    const pastZeros = Buffer.concat([Buffer.from(full), Buffer.alloc(1000), Buffer.from('x'), Buffer.alloc(10)]);
    const segment = scan(dirWith([[1, pastZeros]])).segments[0];
    expect(segment).toMatchObject({ parsed: { validBytes: Buffer.byteLength(full), tornTail: true }, nonZeroEnd: pastZeros.length - 10 });
    expect(parseJournal(pastZeros.toString('utf8')).tornTail).toBe(true);
    expect(() => scan(dirWith([[1, torn], [6, text(5, 8)]]))).toThrow(ChainBreak);
  });

  it('throws ChainBreak naming the segment and line on a damaged line, after the records before it', () => {
    const dir = dirWith([[1, `${text(0, 3)}not a record\n${text(3, 5)}`]]);
    const seen: number[] = [];
    let thrown: unknown;
    try {
      scanJournalSegments(dir, (record) => seen.push(record.seq));
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(ChainBreak);
    expect(thrown).toMatchObject({ reason: 'unreadable file', seq: 4, message: expect.stringContaining('line 4') });
    expect(seen).toEqual([1, 2, 3]);
  });
});
