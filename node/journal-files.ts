import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ChainBreak } from '../protocol/chain-verify.js';
import { isRecordLike, sortedJournalSegments } from '../protocol/data-file.js';
import type { ChainRecord } from '../protocol/records.js';

/** Reading journal segments (format in `protocol/data-file.ts`): one parser for the daemon, the verifiers and the tests. */
export interface ParsedJournal {
  records: ChainRecord[];
  /** Byte length of the complete lines: what follows is preallocated zeros or a torn, never-acknowledged write. */
  validBytes: number;
  tornTail: boolean;
  /** Set when a complete line in the middle is not a record: the segment is damaged. */
  damagedLine?: number;
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
    const body = text.slice(offset, lineEnd);
    let record: unknown;
    try {
      record = JSON.parse(body);
    } catch {
      return { records, validBytes: Buffer.byteLength(text.slice(0, offset)), tornTail: false, damagedLine: line };
    }
    if (!isRecordLike(record)) {
      return { records, validBytes: Buffer.byteLength(text.slice(0, offset)), tornTail: false, damagedLine: line };
    }
    records.push(record);
    offset = lineEnd + 1;
  }
  return { records, validBytes: Buffer.byteLength(text), tornTail: writtenPastEnd };
}

/** Every record of the journal segments in `dir`, oldest first; throws ChainBreak on a damaged segment. */
export function readJournalRecords(dir: string): ChainRecord[] {
  const names = sortedJournalSegments(readdirSync(dir));
  const records: ChainRecord[] = [];
  names.forEach((name, index) => {
    const parsed = parseJournal(readFileSync(join(dir, name), 'utf8'));
    if (parsed.damagedLine !== undefined || (parsed.tornTail && index < names.length - 1)) {
      const seq = parsed.records.length ? parsed.records[parsed.records.length - 1].seq + 1 : null;
      throw new ChainBreak('unreadable file', seq, `journal segment ${name} is damaged at line ${parsed.damagedLine ?? parsed.records.length + 1}`);
    }
    records.push(...parsed.records);
  });
  return records;
}
