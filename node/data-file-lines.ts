import { DOCUMENT_END_LINE, parseEntryRecord, parseHeader, parseTaskHead, TASK_END_LINE, TASKS_SECTION_LINE, type DataFileV2Header, type TaskHead } from '../protocol/data-file-v2.js';
import type { ChainRecord } from '../protocol/records.js';
import { forEachLine } from './file-lines.js';

/** The file is not a taskhistory/2 document in the daemon's line layout (v1, re-indented...): parse it whole instead. */
export class OtherLayout extends Error {}

/**
 * The item a visitor is called for: its bytes without the list comma and the newline, and where they
 * are in the file. Valid only during the call: the walk reuses it and its buffer for every line.
 */
export class ItemLine {
  bytes: Buffer = Buffer.alloc(0);
  start = 0;
  end = 0;
  offset = 0;

  get length(): number {
    return this.end - this.start;
  }

  text(): string {
    return this.bytes.toString('utf8', this.start, this.end);
  }
}

/** What a walk of the layout hands on, item by item, in file order. Any of them may throw OtherLayout. */
export interface DataFileV2Visitor {
  header(header: DataFileV2Header): void;
  /** A `[seq,"hash"]` entry: its record is a step view further on, or no longer kept. */
  stub(seq: number, hash: string, line: ItemLine): void;
  /** An entry kept whole. */
  record(record: ChainRecord, line: ItemLine): void;
  endEntries?(): void;
  taskHead(head: TaskHead, line: ItemLine): void;
  /** A step view, its seq read from the line's `{"seq":N,` start. */
  step(seq: number, line: ItemLine): void;
}

const COMMA = 0x2c;
const QUOTE = 0x22;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const DIGIT_0 = 0x30;
/** The 1-16 digits of a seq, as JSON writes a safe integer. */
const MAX_SEQ_DIGITS = 16;
const HASH_HEX_DIGITS = 64;
/** A stub's bytes besides its seq's digits: `[`, `,"`, the hash, `"]`. */
const STUB_FIXED_BYTES = 1 + 2 + HASH_HEX_DIGITS + 2;
/** How a step view line starts: `{"seq":` and its seq's digits, then a comma. */
const STEP_VIEW_START = Buffer.from('{"seq":', 'latin1');
const withoutNewline = (line: string) => line.slice(0, -1);
const TASKS_SECTION = withoutNewline(TASKS_SECTION_LINE);
const TASK_END = withoutNewline(TASK_END_LINE);
const DOCUMENT_END = withoutNewline(DOCUMENT_END_LINE);

/**
 * Walks a taskhistory/2 file in the layout the daemon writes (docs/format-v2.md) a line at a time,
 * checking the structure (sections, list commas, the end) and nothing else: the daemon's start-up
 * index and the streaming verifier are its two visitors. Returns the header; throws OtherLayout at
 * the first line that does not fit.
 */
export function walkDataFileV2(fd: number, visitor: DataFileV2Visitor): DataFileV2Header {
  let state = 'header' as 'header' | 'entries' | 'tasks' | 'steps' | 'done';
  let header: DataFileV2Header | null = null;
  // Whether the next item is the first of its list (entries, tasks, a task's steps): it has no comma.
  let first = true;
  const line = new ItemLine();
  const scanned = forEachLine(fd, 0, (bytes, start, end, fileOffset) => {
    const comma = bytes[start] === COMMA ? 1 : 0;
    if ((comma === 1) === first && state !== 'header') {
      const isSectionEnd = bytes[start] === CLOSE_BRACKET; // ends a list, never an item
      if (!isSectionEnd) throw new OtherLayout(`a list comma is missing or misplaced at byte ${fileOffset}`);
    }
    line.bytes = bytes;
    line.start = start + comma;
    line.end = end;
    line.offset = fileOffset + comma;
    // Stubs and step views, one of each per record, are read from the bytes: no line decoded, no regex, no object.
    if (state === 'steps' && bytes[start] !== CLOSE_BRACKET) {
      const seq = stepViewSeqAt(bytes, line.start, end);
      if (seq < 0) throw new OtherLayout(`not a step view at byte ${fileOffset}`);
      visitor.step(seq, line);
      first = false;
      return;
    }
    if (state === 'entries' && bytes[line.start] === OPEN_BRACKET) {
      const seq = stubSeqAt(bytes, line.start, end);
      if (seq < 0) throw new OtherLayout(`not a chain entry at byte ${fileOffset}`);
      visitor.stub(seq, bytes.toString('latin1', end - 2 - HASH_HEX_DIGITS, end - 2), line);
      first = false;
      return;
    }
    const text = bytes.toString('utf8', start, end);
    switch (state) {
      case 'header':
        header = parseHeader(text);
        if (!header) throw new OtherLayout('not the taskhistory/2 header');
        visitor.header(header);
        state = 'entries';
        first = true;
        return;
      case 'entries': {
        if (text === TASKS_SECTION) {
          visitor.endEntries?.();
          state = 'tasks';
          first = true;
          return;
        }
        const record = parseEntryRecord(text);
        if (!record) throw new OtherLayout(`not a chain entry at byte ${fileOffset}`);
        visitor.record(record, line);
        first = false;
        return;
      }
      case 'tasks': {
        if (text === DOCUMENT_END) {
          state = 'done';
          return;
        }
        const head = parseTaskHead(text);
        if (!head) throw new OtherLayout(`not a task head at byte ${fileOffset}`);
        visitor.taskHead(head, line);
        state = 'steps';
        first = true;
        return;
      }
      case 'steps':
        if (text !== TASK_END) throw new OtherLayout(`not a step view at byte ${fileOffset}`);
        state = 'tasks';
        first = false;
        return;
      default:
        throw new OtherLayout('text after the end of the document');
    }
  });
  if (scanned.partial || state !== 'done' || !header) throw new OtherLayout('the document ends early');
  return header;
}

/** Each byte's value as a lowercase hex digit; INVALID_HEX for any other byte. */
const INVALID_HEX = 16;
const HEX_VALUES = new Uint8Array(256).fill(INVALID_HEX);
for (let digit = 0; digit < 16; digit++) HEX_VALUES['0123456789abcdef'.charCodeAt(digit)] = digit;

/** The seq of a `[seq,"hash"]` stub in bytes[start..end), the hash 64 lowercase hex digits; -1 for any other line. */
export function stubSeqAt(bytes: Buffer, start: number, end: number): number {
  const digits = stubDigits(bytes, start, end);
  if (digits < 0) return -1;
  let invalid = 0;
  for (let i = end - 2 - HASH_HEX_DIGITS; i < end - 2; i++) invalid |= HEX_VALUES[bytes[i]];
  return invalid & INVALID_HEX ? -1 : seqAt(bytes, start + 1, start + 1 + digits);
}

/** stubSeqAt that also decodes the hash into target[at..at+32), in the same pass over its digits. */
export function readStubInto(bytes: Buffer, start: number, end: number, target: Buffer, at: number): number {
  const digits = stubDigits(bytes, start, end);
  if (digits < 0) return -1;
  let invalid = 0;
  for (let i = 0, hex = end - 2 - HASH_HEX_DIGITS; i < HASH_HEX_DIGITS / 2; i++, hex += 2) {
    const high = HEX_VALUES[bytes[hex]];
    const low = HEX_VALUES[bytes[hex + 1]];
    invalid |= high | low;
    target[at + i] = (high << 4) | low;
  }
  return invalid & INVALID_HEX ? -1 : seqAt(bytes, start + 1, start + 1 + digits);
}

/** How many digits a line shaped `[digits,"<64 bytes>"]` has for its seq; -1 for any other shape. */
function stubDigits(bytes: Buffer, start: number, end: number): number {
  const digits = end - start - STUB_FIXED_BYTES;
  if (digits < 1 || digits > MAX_SEQ_DIGITS || bytes[start] !== OPEN_BRACKET || bytes[end - 1] !== CLOSE_BRACKET || bytes[end - 2] !== QUOTE) return -1;
  const hashStart = end - 2 - HASH_HEX_DIGITS;
  return bytes[hashStart - 2] === COMMA && bytes[hashStart - 1] === QUOTE ? digits : -1;
}

/** The seq of a step view line in bytes[start..end), from its `{"seq":N,` start; -1 for any other line. */
export function stepViewSeqAt(bytes: Buffer, start: number, end: number): number {
  const digitsStart = start + STEP_VIEW_START.length;
  if (end - digitsStart < 2) return -1;
  for (let i = 0; i < STEP_VIEW_START.length; i++) if (bytes[start + i] !== STEP_VIEW_START[i]) return -1;
  const limit = Math.min(end, digitsStart + MAX_SEQ_DIGITS + 1);
  for (let i = digitsStart + 1; i < limit; i++) if (bytes[i] === COMMA) return seqAt(bytes, digitsStart, i);
  return -1;
}

/** The decimal digits bytes[from..to) as a safe integer; -1 if any is not a digit or it is too large. */
function seqAt(bytes: Buffer, from: number, to: number): number {
  let value = 0;
  for (let i = from; i < to; i++) {
    const digit = bytes[i] - DIGIT_0;
    if (digit < 0 || digit > 9) return -1;
    value = value * 10 + digit;
  }
  return Number.isSafeInteger(value) ? value : -1;
}
