import type { Sha256Hex } from './canonical.js';
import { DATA_FILE_FORMAT, DATA_FILE_FORMAT_V1, isRecordLike, type ChainEntry, type DataFileV1, type DataFileV2 } from './data-file.js';
import { LARGE_FIELDS, type ChainPoint, type ChainRecord, type RecordStub, type StepLoggedRecord, type Writer } from './records.js';
import type { StepView, TaskView } from './task-view.js';

/**
 * The `taskhistory/2` encoding, one item per line (docs/format-v2.md is the normative layout):
 *
 *   header line (ends with `"entries":[`), one chain entry per seq, `]},"tasks":[`,
 *   per task: its head line (ends with `"steps":[`), one step view per step (`{"seq":N,...}`), `]}`,
 *   then `]}`.
 *
 * Every line but the first of its list starts with the JSON array comma. The decoders below read
 * single lines of exactly this layout for the daemon's fast scan. They return null when a line is
 * not in the canonical layout (the caller then parses the whole document, which is still valid
 * JSON in any layout); they never throw.
 */

export interface DataFileV2Header {
  machine_id: string;
  max_tasks: number;
  count: number;
  head: ChainPoint;
  anchor: ChainPoint;
}

export type TaskHead = Omit<TaskView, 'steps'>;

export const TASKS_SECTION_LINE = ']},"tasks":[\n';
export const TASK_END_LINE = ']}\n';
export const DOCUMENT_END_LINE = ']}\n';

const HEADER_START = `{"format":${JSON.stringify(DATA_FILE_FORMAT)},`;
const HEADER_END = '"entries":[';
const STEPS_OPEN = ',"steps":[';

export function headerLine(h: DataFileV2Header): string {
  return (
    `${HEADER_START}"machine_id":${JSON.stringify(h.machine_id)},"max_tasks":${JSON.stringify(h.max_tasks)},` +
    `"count":${JSON.stringify(h.count)},"head":${pointJson(h.head)},"chain":{"anchor":${pointJson(h.anchor)},${HEADER_END}\n`
  );
}

function pointJson(p: ChainPoint): string {
  return `{"seq":${JSON.stringify(p.seq)},"hash":${JSON.stringify(p.hash)}}`;
}

/** One chain entry; a full record is written without its large fields (they live in the step view). */
export function entryLine(entry: ChainEntry, first: boolean): string {
  const comma = first ? '' : ',';
  if (Array.isArray(entry)) return `${comma}[${entry[0]},${JSON.stringify(entry[1])}]\n`;
  return `${comma}${JSON.stringify(withoutLargeFields(entry))}\n`;
}

function withoutLargeFields(record: ChainRecord): ChainRecord {
  if (!LARGE_FIELDS.some((field) => field in record)) return record;
  const copy = { ...record } as Record<string, unknown>;
  for (const field of LARGE_FIELDS) delete copy[field];
  return copy as unknown as ChainRecord;
}

/** The task's head: its view without `steps`, opening the `steps` list. */
export function taskHeadLine(task: TaskHead | TaskView, first: boolean): string {
  const { steps: _steps, ...head } = task as TaskView;
  return `${first ? '' : ','}${JSON.stringify(head).slice(0, -1)}${STEPS_OPEN}\n`;
}

/**
 * What a step view's `writer` says when the step's writer is its task's: the writer of every step
 * is otherwise written out again, about 70 bytes a step.
 */
export const TASK_WRITER = 'task';

function sameWriter(a: Writer, b: Writer): boolean {
  return a.uid === b.uid && a.gid === b.gid && a.pid === b.pid && a.comm === b.comm && a.exe === b.exe;
}

/** A step view with `seq` first, so that a scan reads it without parsing the line; `writer` is TASK_WRITER when it is the task's. */
export function stepViewLine(step: StepView, first: boolean, taskWriter: Writer | undefined): string {
  const { seq, ...rest } = step;
  if (rest.writer && taskWriter && sameWriter(rest.writer, taskWriter)) (rest as Record<string, unknown>).writer = TASK_WRITER;
  const body = JSON.stringify(rest);
  return `${first ? '' : ','}{"seq":${seq}${body === '{}' ? '}' : `,${body.slice(1)}`}\n`;
}

/** What the chain section holds for a kept record: a stub when the step view rebuilds it, else the record. */
export function chainEntryOf(record: ChainRecord): ChainEntry {
  if (record.type === 'step_logged' && record.elided === undefined) return [record.seq, record.hash];
  return withoutLargeFields(record);
}

/** A step view as read from a data file, with its TASK_WRITER replaced by the task's writer. */
export function expandStepView(view: StepView, taskWriter: Writer | undefined): StepView {
  return (view.writer as unknown) === TASK_WRITER && taskWriter ? { ...view, writer: taskWriter } : view;
}

/** The step view a step record gives (the one conversion, used by applyRecordToTasks too). */
export function stepViewOf(record: StepLoggedRecord): StepView {
  const step = { step: record.step, command: record.command, status: record.status, timestamp: record.ts } as StepView;
  if (record.output !== undefined) step.output = record.output;
  if (record.error !== undefined) step.error = record.error;
  if (record.recovery !== undefined) step.recovery = record.recovery;
  if (record.started_at !== undefined) step.started_at = record.started_at;
  if (record.duration_ms !== undefined) step.duration_ms = record.duration_ms;
  if (record.exit_code !== undefined) step.exit_code = record.exit_code;
  if (record.writer !== undefined) step.writer = record.writer;
  step.seq = record.seq;
  return step;
}

/**
 * The step record a view stands for (the spec's one rebuilding rule). It is the original record
 * exactly when `recordHash(result) === hash`; the caller checks that.
 */
export function rebuildStepRecord(view: StepView, taskId: string, prevHash: string, hash: string, sha256Hex: Sha256Hex): StepLoggedRecord {
  const record = {
    type: 'step_logged',
    ts: view.timestamp,
    task_id: taskId,
    step: view.step,
    command: view.command,
    status: view.status,
  } as StepLoggedRecord;
  for (const field of LARGE_FIELDS) if (view[field] !== undefined) record[field] = view[field];
  if (view.started_at !== undefined) record.started_at = view.started_at;
  if (view.duration_ms !== undefined) record.duration_ms = view.duration_ms;
  if (view.exit_code !== undefined) record.exit_code = view.exit_code;
  if (view.writer !== undefined) record.writer = view.writer;
  record.seq = view.seq;
  record.prev_hash = prevHash;
  for (const field of LARGE_FIELDS) {
    const text = view[field];
    if (text !== undefined) record[`${field}_sha256`] = sha256Hex(text);
  }
  record.hash = hash;
  return record;
}

/** In-memory content of a data file: exactly the members of a v1 document. */
export interface DataFileContent {
  machine_id: string;
  max_tasks: number;
  head: ChainPoint;
  anchor: ChainPoint;
  /** `[seq, hash]` of trimmed records. */
  stubs: RecordStub[];
  /** The kept records, with their large fields. */
  records: ChainRecord[];
  tasks: TaskView[];
}

/** The whole v2 document, line by line. Stubs and records are each in seq order; together they cover anchor+1..head. */
export function* dataFileV2Lines(doc: DataFileContent): Generator<string> {
  yield headerLine({ machine_id: doc.machine_id, max_tasks: doc.max_tasks, count: doc.tasks.length, head: doc.head, anchor: doc.anchor });
  let s = 0;
  let r = 0;
  let first = true;
  while (s < doc.stubs.length || r < doc.records.length) {
    const takeStub = r >= doc.records.length || (s < doc.stubs.length && doc.stubs[s][0] < doc.records[r].seq);
    yield entryLine(takeStub ? doc.stubs[s++] : chainEntryOf(doc.records[r++]), first);
    first = false;
  }
  yield TASKS_SECTION_LINE;
  for (let t = 0; t < doc.tasks.length; t++) {
    const task = doc.tasks[t];
    yield taskHeadLine(task, t === 0);
    for (let i = 0; i < task.steps.length; i++) yield stepViewLine(task.steps[i], i === 0, task.writer);
    yield TASK_END_LINE;
  }
  yield DOCUMENT_END_LINE;
}

/**
 * What a parsed data file holds, whatever its format: the kept records with their texts, the stubs
 * of trimmed ones, the tasks. A taskhistory/2 step is rebuilt from its view (the one rule
 * of data-file-v2.ts); nothing is checked here: verify the document for that.
 */
export function dataFileContent(doc: DataFileV1 | DataFileV2, sha256Hex: Sha256Hex): DataFileContent {
  const { machine_id, max_tasks, head } = doc;
  if (doc.format === DATA_FILE_FORMAT_V1) {
    const { anchor, stubs, records } = (doc as DataFileV1).chain;
    return { machine_id, max_tasks, head, tasks: doc.tasks, anchor, stubs, records };
  }
  const tasks = doc.tasks.map((task) => ({ ...task, steps: task.steps.map((view) => expandStepView(view, task.writer)) }));
  const { anchor, entries } = (doc as DataFileV2).chain;
  const views = new Map<number, { view: StepView; taskId: string }>();
  for (const task of tasks) for (const view of task.steps) views.set(view.seq, { view, taskId: task.task_id });
  const stubs: RecordStub[] = [];
  const records: ChainRecord[] = [];
  let previous = anchor.hash;
  for (const entry of entries) {
    if (Array.isArray(entry)) {
      const kept = views.get(entry[0]);
      if (kept) records.push(rebuildStepRecord(kept.view, kept.taskId, previous, entry[1], sha256Hex));
      else stubs.push(entry);
      previous = entry[1];
      continue;
    }
    const record = { ...entry } as ChainRecord;
    const view = views.get(record.seq)?.view;
    if (record.type === 'step_logged' && view) for (const field of LARGE_FIELDS) if (view[field] !== undefined) (record as StepLoggedRecord)[field] = view[field];
    records.push(record);
    previous = record.hash;
  }
  return { machine_id, max_tasks, head, tasks, anchor, stubs, records };
}

// ---- decoders for the fast scan (lines without their "\n"); node/data-file-lines.ts reads stubs and step seqs from the bytes ----

/** A chain entry line kept whole: its record, or null for anything else (a stub among them). */
export function parseEntryRecord(line: string): ChainRecord | null {
  const value = parseJson(line.startsWith(',') ? line.slice(1) : line);
  return isRecordLike(value) ? value : null;
}

export function isTaskHeadLine(line: string): boolean {
  return /^,?\{"task_id":/.test(line) && line.endsWith(STEPS_OPEN);
}

export function parseTaskHead(line: string): TaskHead | null {
  if (!isTaskHeadLine(line)) return null;
  const value = parseJson(`${line.slice(line.startsWith(',') ? 1 : 0, -STEPS_OPEN.length)}}`) as Partial<TaskHead> | null;
  if (!value || typeof value !== 'object' || typeof value.task_id !== 'string' || !Number.isSafeInteger(value.seq)) return null;
  return value as TaskHead;
}

export function parseHeader(line: string): DataFileV2Header | null {
  if (!line.startsWith(HEADER_START) || !line.endsWith(HEADER_END)) return null;
  const value = parseJson(`${line}]}}`) as { machine_id?: unknown; max_tasks?: unknown; count?: unknown; head?: unknown; chain?: { anchor?: unknown } } | null;
  if (!value || typeof value.machine_id !== 'string' || !Number.isSafeInteger(value.max_tasks) || !Number.isSafeInteger(value.count)) return null;
  if (!isPoint(value.head) || !isPoint(value.chain?.anchor)) return null;
  return { machine_id: value.machine_id, max_tasks: value.max_tasks as number, count: value.count as number, head: value.head, anchor: value.chain.anchor };
}

function isPoint(p: unknown): p is ChainPoint {
  return !!p && typeof p === 'object' && Number.isSafeInteger((p as ChainPoint).seq) && typeof (p as ChainPoint).hash === 'string';
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}
