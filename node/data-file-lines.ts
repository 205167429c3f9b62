import { DOCUMENT_END_LINE, parseHeader, parseTaskHead, peekEntrySeqHash, peekStepSeq, TASK_END_LINE, TASKS_SECTION_LINE, type DataFileV2Header, type EntryPeek, type TaskHead } from '../protocol/data-file-v2.js';
import { forEachLine } from './file-lines.js';

/** The file is not a taskhistory/2 document in the daemon's line layout (v1, re-indented...): parse it whole instead. */
export class OtherLayout extends Error {}

/** Where an item's JSON is in the file: after its list comma, without its newline. */
export interface ItemPlace {
  offset: number;
  length: number;
}

/** What a walk of the layout hands on, item by item, in file order. Any of them may throw OtherLayout. */
export interface DataFileV2Visitor {
  header(header: DataFileV2Header): void;
  entry(entry: EntryPeek, text: string, place: ItemPlace): void;
  endEntries?(): void;
  taskHead(head: TaskHead, place: ItemPlace): void;
  /** A step view: its seq from the line's prefix; `text` decodes the whole item only when called. */
  step(seq: number, text: () => string, place: ItemPlace): void;
}

const COMMA = 0x2c;
/** Enough of a step view line to hold its `{"seq":N,` prefix. */
const STEP_PREFIX_BYTES = 32;
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
  const scanned = forEachLine(fd, 0, (bytes, start, end, fileOffset) => {
    const comma = bytes[start] === COMMA ? 1 : 0;
    if ((comma === 1) === first && state !== 'header') {
      const isSectionEnd = bytes[start] === 0x5d; // `]`: ends a list, never an item
      if (!isSectionEnd) throw new OtherLayout(`a list comma is missing or misplaced at byte ${fileOffset}`);
    }
    const place = { offset: fileOffset + comma, length: end - start - comma };
    if (state === 'steps' && bytes[start] !== 0x5d) {
      const prefix = bytes.toString('latin1', start, Math.min(end, start + STEP_PREFIX_BYTES));
      const seq = peekStepSeq(prefix);
      if (seq === null) throw new OtherLayout(`not a step view at byte ${fileOffset}`);
      visitor.step(seq, () => bytes.toString('utf8', start + comma, end), place);
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
        const entry = peekEntrySeqHash(text);
        if (!entry) throw new OtherLayout(`not a chain entry at byte ${fileOffset}`);
        visitor.entry(entry, text.slice(comma), place);
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
        visitor.taskHead(head, place);
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
