import { closeSync, constants, fstatSync, readdirSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { ChainBreak } from '../protocol/chain-verify.js';
import { isRecordLike, sortedJournalSegments } from '../protocol/data-file.js';
import type { ChainRecord } from '../protocol/records.js';
import { openRegularFileSync, readRegularFileSync } from './durable-files.js';
import { forEachLine } from './file-lines.js';

/** Reading journal segments (format in `protocol/data-file.ts`): one reader for the daemon, the verifiers, the cloud's files and the tests. */
export interface ParsedJournal {
  records: ChainRecord[];
  /** Byte length of the complete lines: what follows is preallocated zeros or a torn, never-acknowledged write. */
  validBytes: number;
  tornTail: boolean;
  /** Set when a complete line in the middle is not a record: the segment is damaged. */
  damagedLine?: number;
}

/** One journal line (without its newline) as a record, or null when it is not one. */
export function parseJournalLine(line: string): ChainRecord | null {
  try {
    const value: unknown = JSON.parse(line);
    return isRecordLike(value) ? value : null;
  } catch {
    return null;
  }
}

/**
 * Parses one segment. Only an unterminated last line, or anything but zeros after the first NUL
 * byte, counts as torn; any other bad line is damage.
 */
export function parseJournal(segment: string): ParsedJournal {
  const end = segment.indexOf('\0');
  const text = end === -1 ? segment : segment.slice(0, end);
  const writtenPastEnd = end !== -1 && /[^\0]/.test(segment.slice(end));
  const records: ChainRecord[] = [];
  let offset = 0;
  let line = 0;
  while (offset < text.length) {
    const lineEnd = text.indexOf('\n', offset);
    line++;
    if (lineEnd === -1) return { records, validBytes: Buffer.byteLength(text.slice(0, offset)), tornTail: true };
    const record = parseJournalLine(text.slice(offset, lineEnd));
    if (!record) return { records, validBytes: Buffer.byteLength(text.slice(0, offset)), tornTail: false, damagedLine: line };
    records.push(record);
    offset = lineEnd + 1;
  }
  return { records, validBytes: Buffer.byteLength(text), tornTail: writtenPastEnd };
}

/** One segment as read from disk. */
export interface JournalSegment {
  name: string;
  path: string;
  /** The seq its name says it starts at. */
  firstSeq: number;
  parsed: ParsedJournal;
  /** The file's size, and where its bytes end without trailing zeros (preallocated space). */
  size: number;
  nonZeroEnd: number;
}

/**
 * Every journal segment in `dir`, oldest first, each read without following symbolic links
 * (NotARegularFile). Throws ChainBreak on a damaged segment; only the newest may end torn.
 */
export function readJournalSegments(dir: string): JournalSegment[] {
  const names = sortedJournalSegments(readdirSync(dir));
  return names.map((name, index) => {
    const path = join(dir, name);
    const bytes = readRegularFileSync(path);
    const parsed = parseJournal(bytes.toString('utf8'));
    if (parsed.damagedLine !== undefined || (parsed.tornTail && index < names.length - 1)) {
      const seq = parsed.records.length ? parsed.records[parsed.records.length - 1].seq + 1 : null;
      throw new ChainBreak('unreadable file', seq, `journal segment ${path} is damaged at line ${parsed.damagedLine ?? parsed.records.length + 1}`);
    }
    let nonZeroEnd = bytes.length;
    while (nonZeroEnd > 0 && bytes[nonZeroEnd - 1] === 0) nonZeroEnd--;
    return { name, path, firstSeq: Number(name.split('.')[2]), parsed, size: bytes.length, nonZeroEnd };
  });
}

/** Every record of the journal segments in `dir`, oldest first; throws ChainBreak on a damaged segment. */
export function readJournalRecords(dir: string): ChainRecord[] {
  return readJournalSegments(dir).flatMap((segment) => segment.parsed.records);
}

/** One segment as scanned: JournalSegment without its records (they went to the callback). */
export interface JournalSegmentInfo extends Omit<JournalSegment, 'parsed'> {
  parsed: Omit<ParsedJournal, 'records'>;
}

/**
 * Every journal segment in `dir`, oldest first, streamed a line at a time to `onRecord` with the
 * line's place (offset and byte length without its newline): memory stays flat however long the
 * journal. The same rules as readJournalSegments: a segment's lines end at its first NUL byte,
 * only the newest may end torn, any other bad line is damage (ChainBreak).
 */
export function scanJournalSegments(dir: string, onRecord: (record: ChainRecord, segment: JournalSegmentInfo, offset: number, length: number) => void): JournalSegmentInfo[] {
  const names = sortedJournalSegments(readdirSync(dir));
  return names.map((name, index) => {
    const path = join(dir, name);
    const fd = openRegularFileSync(path, constants.O_RDONLY);
    try {
      const size = fstatSync(fd).size;
      const segment: JournalSegmentInfo = { name, path, firstSeq: Number(name.split('.')[2]), size, nonZeroEnd: nonZeroEndOf(fd, size), parsed: { validBytes: 0, tornTail: false } };
      let line = 0;
      let ended = false;
      let lastSeq: number | null = null;
      const scanned = forEachLine(fd, 0, (bytes, start, end, fileOffset) => {
        if (ended) return;
        line++;
        const nul = bytes.indexOf(0, start);
        if (nul !== -1 && nul < end) {
          // The lines end here; anything but zeros after this point was never acknowledged.
          ended = true;
          return;
        }
        const record = parseJournalLine(bytes.toString('utf8', start, end));
        if (!record) {
          segment.parsed.damagedLine = line;
          ended = true;
          return;
        }
        onRecord(record, segment, fileOffset, end - start);
        lastSeq = record.seq;
        segment.parsed.validBytes = fileOffset + (end - start) + 1;
      });
      if (segment.parsed.damagedLine === undefined) segment.parsed.tornTail = segment.nonZeroEnd > segment.parsed.validBytes || (scanned.partial && segment.nonZeroEnd > scanned.end);
      if (segment.parsed.damagedLine !== undefined || (segment.parsed.tornTail && index < names.length - 1)) {
        const seq = lastSeq === null ? null : lastSeq + 1;
        throw new ChainBreak('unreadable file', seq, `journal segment ${path} is damaged at line ${segment.parsed.damagedLine ?? line + 1}`);
      }
      return segment;
    } finally {
      closeSync(fd);
    }
  });
}

/** Where a file's bytes end without its trailing zeros (the journal's preallocated space). */
function nonZeroEndOf(fd: number, size: number): number {
  const block = Buffer.allocUnsafe(64 * 1024);
  let end = size;
  while (end > 0) {
    const from = Math.max(0, end - block.length);
    const read = readSync(fd, block, 0, end - from, from);
    let i = read;
    while (i > 0 && block[i - 1] === 0) i--;
    if (i > 0) return from + i;
    end = from;
  }
  return 0;
}
