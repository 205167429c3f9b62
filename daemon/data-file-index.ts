import { fstatSync } from 'node:fs';
import { DOCUMENT_END_LINE, parseEntryRecord, parseHeader, TASK_END_LINE, TASKS_SECTION_LINE, type DataFileV2Header } from '../protocol/data-file-v2.js';
import type { ChainPoint, ChainRecord } from '../protocol/records.js';
import { OtherLayout, readStubInto, walkDataFileV2 } from '../node/data-file-lines.js';
import { forEachLineRun } from '../node/file-lines.js';
import type { ChainState, LinePlace } from './chain-state.js';
import { RecordForm } from './record-index.js';
import type { TasksSectionIndex } from './tasks-section-index.js';

const NEWLINE = 0x0a;
const COMMA = 0x2c;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const HASH_BYTES = 32;
/** Stubs gathered before they are appended to the index together. */
const PENDING_STUBS = 4096;
const TASKS_SECTION = TASKS_SECTION_LINE.slice(0, -1);

export interface IndexedDataFile {
  machineId: string;
  head: ChainPoint;
}

/**
 * Builds the chain state's index from a taskhistory/2 data file in the daemon's own line layout,
 * reading each line's place and, for step views, only their seq: no whole-document parse, no
 * hashing (the full verification runs apart). Throws OtherLayout at the first line that does not
 * fit the layout or the chain. With `cacheLines`, keeps every line's text (a small file is held whole).
 */
export function indexDataFile(state: ChainState, fd: number, fileId: number, cacheLines: boolean): IndexedDataFile {
  let taskId: string | null = null;
  let tasksSeen = 0;
  const { head, count, machine_id: machineId } = walkDataFileV2(fd, {
    header: (header) => state.startAfter(header.anchor),
    stub: (seq, hash) => {
      if (seq !== state.head.seq + 1) throw new OtherLayout(`entry for seq ${seq} where ${state.head.seq + 1} was expected`);
      state.appendHash(seq, hash);
    },
    record: (record, line) => applyEntryRecord(state, record, { fileId, offset: line.offset, length: line.length }, cacheLines ? line.text() : undefined),
    taskHead: (head) => {
      if (!state.tasks.has(head.task_id)) throw new OtherLayout(`task ${head.task_id} has no task_created entry`);
      taskId = head.task_id;
      tasksSeen++;
    },
    step: (seq, line) => {
      if (!state.claimStepView(seq, taskId as string, fileId, line.offset, line.length)) throw new OtherLayout(`step seq ${seq} is not a kept step of task ${taskId} in order`);
      if (cacheLines) state.cacheLine(seq, RecordForm.stepViewLine, line.text());
    },
  });
  checkIndexed(state, head, count, tasksSeen);
  return { machineId, head: { ...head } };
}

/**
 * indexDataFile for a file with a tasks index (daemon/tasks-section-index.ts): the header and the
 * entries are read, in runs of lines with one loop and no call per stub, and every step is placed
 * from the index, its line never read. OtherLayout where the file or the index does not fit.
 */
export function indexDataFileByTasksIndex(state: ChainState, fd: number, fileId: number, tasksIndex: TasksSectionIndex): IndexedDataFile {
  let header: DataFileV2Header | null = null;
  let tasksAt = -1;
  // Stubs are gathered and appended together; a record between them appends those before it first.
  const pending = Buffer.allocUnsafe(PENDING_STUBS * HASH_BYTES);
  let pendingStubs = 0;
  const appendPending = () => {
    state.appendHashes(state.head.seq + 1, pending.subarray(0, pendingStubs * HASH_BYTES));
    pendingStubs = 0;
  };
  let firstEntry = true;
  forEachLineRun(fd, 0, (bytes, start, end, runOffset) => {
    for (let lineStart = start; lineStart < end; ) {
      const newline = bytes.indexOf(NEWLINE, lineStart);
      const fileOffset = runOffset + lineStart - start;
      const comma = bytes[lineStart] === COMMA ? 1 : 0;
      const itemStart = lineStart + comma;
      lineStart = newline + 1;
      if (header === null) {
        header = parseHeader(bytes.toString('utf8', itemStart, newline));
        if (!header) throw new OtherLayout('not the taskhistory/2 header');
        state.startAfter(header.anchor);
        continue;
      }
      if (bytes[itemStart] !== CLOSE_BRACKET && (comma === 1) === firstEntry) throw new OtherLayout(`a list comma is missing or misplaced at byte ${fileOffset}`);
      firstEntry = false;
      if (bytes[itemStart] === OPEN_BRACKET) {
        const expected = state.head.seq + pendingStubs + 1;
        if (readStubInto(bytes, itemStart, newline, pending, pendingStubs * HASH_BYTES) !== expected) throw new OtherLayout(`not the chain entry for seq ${expected} at byte ${fileOffset}`);
        if (++pendingStubs === PENDING_STUBS) appendPending();
        continue;
      }
      appendPending();
      const text = bytes.toString('utf8', itemStart, newline);
      if (text === TASKS_SECTION) {
        tasksAt = runOffset + lineStart - start;
        return true;
      }
      const record = parseEntryRecord(text);
      if (!record) throw new OtherLayout(`not a chain entry at byte ${fileOffset}`);
      applyEntryRecord(state, record, { fileId, offset: fileOffset + comma, length: newline - itemStart });
    }
    return false;
  });
  const found = header as DataFileV2Header | null;
  if (found === null || tasksAt < 0) throw new OtherLayout('the document ends early');
  checkIndexed(state, found.head, found.count, claimTasksSection(state, fileId, tasksIndex, tasksAt, fstatSync(fd).size));
  return { machineId: found.machine_id, head: { ...found.head } };
}

/** A record an entry of the file holds whole: a task's or the daemon's own (a step is kept as its view). */
function applyEntryRecord(state: ChainState, record: ChainRecord, place: LinePlace, line?: string): void {
  if (record.seq !== state.head.seq + 1) throw new OtherLayout(`entry for seq ${record.seq} where ${state.head.seq + 1} was expected`);
  // A step kept whole (it carries `elided`) has its texts in its view: the whole-document path handles it.
  if (record.type === 'step_logged') throw new OtherLayout(`seq ${record.seq} is a step record kept whole`);
  if (record.type === 'task_completed' && !state.tasks.has(record.task_id)) throw new OtherLayout(`seq ${record.seq} completes a task not created before it`);
  state.apply(record, place, line);
}

/**
 * Places every kept step at its view line from the tasks index instead of reading the section: the
 * lines follow each other from `tasksAt` (a task's head, its steps, its end; then the document's
 * end), so their sizes must add up to the file's. Returns the number of tasks.
 */
function claimTasksSection(state: ChainState, fileId: number, index: TasksSectionIndex, tasksAt: number, fileSize: number): number {
  if (index.tasksAt !== tasksAt) throw new OtherLayout(`the tasks index starts at byte ${index.tasksAt}, the file's tasks at ${tasksAt}`);
  const taskOfSeq = new Map([...state.tasks.values()].map((task) => [task.seq, task.task_id]));
  let at = tasksAt;
  for (const { createdSeq, headBytes, steps } of index.tasks) {
    const taskId = taskOfSeq.get(createdSeq);
    if (taskId === undefined) throw new OtherLayout(`the tasks index lists a task created at seq ${createdSeq}, the file has none`);
    at += headBytes;
    for (let i = 0; i < steps.length; i += 2) {
      const seq = steps[i];
      const lineBytes = steps[i + 1];
      const comma = i === 0 ? 0 : 1;
      if (!state.claimStepView(seq, taskId, fileId, at + comma, lineBytes - comma - 1)) throw new OtherLayout(`step seq ${seq} is not a kept step of task ${taskId} in order`);
      at += lineBytes;
    }
    at += TASK_END_LINE.length;
  }
  at += DOCUMENT_END_LINE.length;
  if (at !== fileSize) throw new OtherLayout(`the tasks index adds up to ${at} bytes, the file has ${fileSize}`);
  return index.tasks.length;
}

function checkIndexed(state: ChainState, head: ChainPoint, count: number, tasksSeen: number): void {
  if (state.head.seq !== head.seq || state.head.hash !== head.hash) throw new OtherLayout(`"head" says seq ${head.seq}, the entries end at seq ${state.head.seq}`);
  if (tasksSeen !== count || tasksSeen !== state.tasks.size) throw new OtherLayout(`"count" is ${count}, the file holds ${tasksSeen} tasks for ${state.tasks.size} created`);
}
