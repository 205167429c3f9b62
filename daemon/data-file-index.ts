import { peekEntrySeqHash, peekStepSeq, parseHeader, parseTaskHead, TASKS_SECTION_LINE, TASK_END_LINE, DOCUMENT_END_LINE } from '../protocol/data-file-v2.js';
import type { ChainPoint, ChainRecord } from '../protocol/records.js';
import { forEachLine } from '../node/file-lines.js';
import type { ChainState } from './chain-state.js';
import { RecordForm } from './record-index.js';

/** The data file is not in the layout the daemon writes (older format, re-indented...): parse it whole instead. */
export class NotCanonicalLayout extends Error {}

export interface IndexedDataFile {
  machineId: string;
  head: ChainPoint;
}

const COMMA = 0x2c;
/** Enough of a step view line to read its `{"seq":N,` prefix. */
const STEP_PREFIX_BYTES = 32;
const STEP_LINE_START = '{"seq":';

const lineText = (constant: string) => constant.slice(0, -1);
const TASKS_SECTION = lineText(TASKS_SECTION_LINE);
const TASK_END = lineText(TASK_END_LINE);
const DOCUMENT_END = lineText(DOCUMENT_END_LINE);

/**
 * Builds the chain state's index from a taskhistory/2 data file in the daemon's own line layout,
 * reading each line's place and, for step views, only their seq: no whole-document parse, no
 * hashing (the full verification runs apart). Throws NotCanonicalLayout at the first line that
 * does not fit the layout. With `cacheLines`, keeps every line's text (a small file is held whole).
 */
export function indexDataFile(state: ChainState, fd: number, fileId: number, cacheLines: boolean): IndexedDataFile {
  let section = 'header' as 'header' | 'entries' | 'tasks' | 'end';
  let header: ReturnType<typeof parseHeader> = null;
  let taskId: string | null = null;
  let tasksSeen = 0;
  let lineNumber = 0;
  const fail = (why: string): never => {
    throw new NotCanonicalLayout(`line ${lineNumber}: ${why}`);
  };
  const scanned = forEachLine(fd, 0, (bytes, start, end, fileOffset) => {
    lineNumber++;
    const comma = bytes[start] === COMMA ? 1 : 0;
    const place = { fileId, offset: fileOffset + comma, length: end - start - comma };
    if (section === 'tasks' && taskId !== null && end - start > STEP_PREFIX_BYTES) {
      const prefix = bytes.toString('latin1', start + comma, start + comma + STEP_PREFIX_BYTES);
      if (prefix.startsWith(STEP_LINE_START)) {
        const seq = peekStepSeq(prefix) ?? fail('not a step view');
        if (!state.claimStepView(seq, taskId, place)) fail(`step seq ${seq} is not a kept step of task ${taskId} in order`);
        if (cacheLines) state.cacheLine(seq, RecordForm.stepViewLine, bytes.toString('utf8', start + comma, end));
        return;
      }
    }
    const text = bytes.toString('utf8', start, end);
    switch (section) {
      case 'header':
        header = parseHeader(text) ?? fail('not the taskhistory/2 header');
        state.startAfter(header.anchor);
        section = 'entries';
        return;
      case 'entries': {
        if (text === TASKS_SECTION) {
          section = 'tasks';
          return;
        }
        const entry = peekEntrySeqHash(text) ?? fail('not a chain entry');
        if (entry.seq !== state.head.seq + 1) fail(`entry for seq ${entry.seq} where ${state.head.seq + 1} was expected`);
        if (!entry.full) {
          state.appendHash(entry.seq, entry.hash);
          return;
        }
        const record = entry.record as ChainRecord;
        // A step kept whole (it carries `elided`) has its texts in its view: the whole-document path handles it.
        if (record.type === 'step_logged') fail(`seq ${record.seq} is a step record kept whole`);
        if (record.type !== 'tamper_detected' && record.type !== 'task_created' && !state.tasks.has(record.task_id)) fail(`seq ${record.seq} is about a task not created before it`);
        state.apply(record, place, cacheLines ? text.slice(comma) : undefined);
        return;
      }
      case 'tasks':
        if (text === TASK_END && taskId !== null) {
          taskId = null;
          return;
        }
        if (text === DOCUMENT_END && taskId === null) {
          section = 'end';
          return;
        }
        if (taskId !== null) fail('not a step view');
        taskId = (parseTaskHead(text.slice(comma)) ?? fail('not a task head')).task_id;
        if (!state.tasks.has(taskId)) fail(`task ${taskId} has no task_created entry`);
        tasksSeen++;
        return;
      default:
        fail('text after the end of the document');
    }
  });
  const found = header as ReturnType<typeof parseHeader>;
  if (section !== 'end' || scanned.partial || !found) fail('the document ends early');
  const { head, count, machine_id: machineId } = found as NonNullable<typeof found>;
  if (state.head.seq !== head.seq || state.head.hash !== head.hash) fail(`"head" says seq ${head.seq}, the entries end at seq ${state.head.seq}`);
  if (tasksSeen !== count || tasksSeen !== state.tasks.size) fail(`"count" is ${count}, the file holds ${tasksSeen} tasks for ${state.tasks.size} created`);
  return { machineId, head: { ...head } };
}
