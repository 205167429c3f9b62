import { closeSync, constants, fstatSync, readdirSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { ChainBreak } from '../protocol/chain-verify.js';
import { isRecordLike, sortedJournalSegments } from '../protocol/data-file.js';
import type { ChainRecord } from '../protocol/records.js';
import { openRegularFileSync } from './durable-files.js';
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

/** A segment's facts without its records (those go to the caller one by one). */
export interface JournalSegmentInfo extends Omit<JournalSegment, 'parsed'> {
  parsed: Omit<ParsedJournal, 'records'>;
}

/**
 * Streams every journal segment in `dir`, oldest first, each opened without following symbolic
 * links (NotARegularFile) and read line by line (bounded memory): `onRecord` gets each record, the
 * segment (its facts complete once the segment is read) and where its line lies (offset, length
 * without "\n"). Same rules as parseJournal: lines end at the first NUL byte; only the newest
 * segment may end torn. Throws ChainBreak on a damaged segment, after the records before the damage.
 */
export function scanJournalSegments(
  dir: string,
  onRecord: (record: ChainRecord, segment: JournalSegmentInfo, offset: number, length: number) => void,
): JournalSegmentInfo[] {
  const names = sortedJournalSegments(readdirSync(dir));
  return names.map((name, index) => {
    const path = join(dir, name);
    const segment: JournalSegmentInfo = { name, path, firstSeq: Number(name.split('.')[2]), parsed: { validBytes: 0, tornTail: false }, size: 0, nonZeroEnd: 0 };
    const fd = openRegularFileSync(path, constants.O_RDONLY);
    let lines = 0;
    let lastSeq: number | null = null;
    try {
      segment.size = fstatSync(fd).size;
      const { dataEnd } = forEachLine(
        fd,
        0,
        (bytes, start, end, offset) => {
          if (segment.parsed.damagedLine !== undefined) return;
          lines++;
          const record = parseJournalLine(bytes.toString('utf8', start, end));
          if (!record) {
            segment.parsed.damagedLine = lines;
            return;
          }
          segment.parsed.validBytes = offset + end - start + 1;
          lastSeq = record.seq;
          onRecord(record, segment, offset, end - start);
        },
        0,
      );
      segment.nonZeroEnd = nonZeroEnd(fd, dataEnd, segment.size);
    } finally {
      closeSync(fd);
    }
    // Anything but zeros after the complete lines is a write that never finished.
    segment.parsed.tornTail = segment.parsed.damagedLine === undefined && segment.nonZeroEnd > segment.parsed.validBytes;
    if (segment.parsed.damagedLine !== undefined || (segment.parsed.tornTail && index < names.length - 1)) {
      throw new ChainBreak('unreadable file', lastSeq === null ? null : lastSeq + 1, `journal segment ${path} is damaged at line ${segment.parsed.damagedLine ?? lines + 1}`);
    }
    return segment;
  });
}

/** Where the file's bytes end without trailing zeros, reading back from its end to `dataEnd` (the first NUL). */
function nonZeroEnd(fd: number, dataEnd: number, size: number): number {
  const chunk = Buffer.allocUnsafe(Math.min(1 << 20, Math.max(1, size - dataEnd)));
  for (let to = size; to > dataEnd; ) {
    const from = Math.max(dataEnd, to - chunk.length);
    const read = readSync(fd, chunk, 0, to - from, from);
    for (let i = read - 1; i >= 0; i--) if (chunk[i] !== 0) return from + i + 1;
    to = from;
  }
  return dataEnd;
}

/**
 * Every journal segment in `dir` with its records, oldest first (scanJournalSegments, kept whole).
 * Throws ChainBreak on a damaged segment; only the newest may end torn.
 */
export function readJournalSegments(dir: string): JournalSegment[] {
  const records = new Map<JournalSegmentInfo, ChainRecord[]>();
  const segments = scanJournalSegments(dir, (record, segment) => {
    const list = records.get(segment);
    if (list) list.push(record);
    else records.set(segment, [record]);
  });
  return segments.map((segment) => ({ ...segment, parsed: { ...segment.parsed, records: records.get(segment) ?? [] } }));
}

/** Every record of the journal segments in `dir`, oldest first; throws ChainBreak on a damaged segment. */
export function readJournalRecords(dir: string): ChainRecord[] {
  return readJournalSegments(dir).flatMap((segment) => segment.parsed.records);
}
