import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readStubInto, stepViewSeqAt, stubSeqAt } from '../node/data-file-lines.js';
import { DATA_FILE_FORMAT, DATA_FILE_FORMAT_V1, type DataFileV1, type DataFileV2 } from '../protocol/data-file.js';
import {
  chainEntryOf,
  dataFileV2Lines,
  DOCUMENT_END_LINE,
  entryLine,
  headerLine,
  isTaskHeadLine,
  parseHeader,
  parseTaskHead,
  parseEntryRecord,
  rebuildStepRecord,
  dataFileContent,
  expandStepView,
  stepViewLine,
  stepViewOf,
  TASK_END_LINE,
  taskHeadLine,
  TASK_WRITER,
  TASKS_SECTION_LINE,
  type DataFileContent,
} from '../protocol/data-file-v2.js';
import { LARGE_FIELDS, recordHash, type ChainRecord, type StepLoggedRecord } from '../protocol/records.js';
import { tasksFromRecords } from '../protocol/task-view.js';
import { sha256Hex } from '../node/sha256.js';
import { ChainFixture, variedChain, WRITER } from './chain-fixture.js';
import { tempDir } from './processes.js';
import { PYTHON_TEST_DIR, lastJsonLine, runPython } from './python/run-python.js';

function v1Doc(c: DataFileContent): DataFileV1 {
  return { format: DATA_FILE_FORMAT_V1, machine_id: c.machine_id, tasks: c.tasks, count: c.tasks.length, max_tasks: c.max_tasks, head: c.head, chain: { anchor: c.anchor, stubs: c.stubs, records: c.records } };
}

const { fixture, trimmed } = variedChain();
const content = fixture.content(trimmed, 10);
const lines = [...dataFileV2Lines(content)];
const text = lines.join('');
const doc = JSON.parse(text) as DataFileV2;
const stepRecords = new Map(content.records.filter((r): r is StepLoggedRecord => r.type === 'step_logged').map((r) => [r.seq, r]));

describe('the taskhistory/2 encoding', () => {
  it('is one JSON document with the same tasks, count and max_tasks as the v1 document of the same records', () => {
    const v1 = v1Doc(content);
    expect(doc.format).toBe(DATA_FILE_FORMAT);
    // The same tasks once a step writer that is its task's ("task") is read back as the task's.
    expect(dataFileContent(doc, sha256Hex).tasks).toEqual(JSON.parse(JSON.stringify(v1.tasks)));
    expect(doc.tasks.map((task) => task.steps.length)).toEqual(v1.tasks.map((task) => task.steps.length));
    expect(doc.count).toBe(v1.count);
    expect(doc.max_tasks).toBe(10);
    expect(doc.head).toEqual(content.head);
    expect(doc.chain.anchor).toEqual({ seq: 3, hash: fixture.records[2].hash });
    expect(Object.keys(doc)).toEqual(['format', 'machine_id', 'max_tasks', 'count', 'head', 'chain', 'tasks']);
    // one entry per seq anchor+1..head, no gaps
    expect(doc.chain.entries.map((e) => (Array.isArray(e) ? e[0] : e.seq))).toEqual(fixture.records.slice(3).map((r) => r.seq));
  });

  it('puts one item on each line, in the layout of the spec', () => {
    expect(lines.every((line) => line.endsWith('\n') && line.indexOf('\n') === line.length - 1)).toBe(true);
    expect(lines[0]).toBe(headerLine({ machine_id: 'm-1', max_tasks: 10, count: 3, head: content.head, anchor: content.anchor }));
    expect(lines[0]).toMatch(/^\{"format":"taskhistory\/2","machine_id":"m-1","max_tasks":10,"count":3,"head":\{"seq":\d+,"hash":"[0-9a-f]{64}"\},"chain":\{"anchor":\{"seq":3,"hash":"[0-9a-f]{64}"\},"entries":\[\n$/);
    const entryCount = content.head.seq - content.anchor.seq;
    expect(lines[1 + entryCount]).toBe(TASKS_SECTION_LINE);
    expect(lines.at(-1)).toBe(DOCUMENT_END_LINE);
    expect(lines.filter((l) => l === TASK_END_LINE).length).toBe(content.tasks.length + 1); // each task, and the document
    expect(lines[1].startsWith(',')).toBe(false);
    expect(lines.slice(2, 1 + entryCount).every((l) => l.startsWith(','))).toBe(true);
  });

  it('stores each large text once: kept steps as [seq,"hash"], full records without output/error/recovery', () => {
    const entries = lines.slice(1, 1 + content.head.seq - content.anchor.seq);
    for (const [i, line] of entries.entries()) {
      const record = fixture.records[3 + i];
      const rebuildable = record.type === 'step_logged' && record.elided === undefined;
      if (rebuildable || trimmed.has((record as { task_id?: string }).task_id ?? '')) {
        expect(line).toBe(`${i === 0 ? '' : ','}[${record.seq},"${record.hash}"]\n`);
      } else {
        const parsed = JSON.parse(line.replace(/^,/, '')) as Record<string, unknown>;
        for (const field of LARGE_FIELDS) expect(parsed).not.toHaveProperty(field);
        expect(parsed.seq).toBe(record.seq);
      }
    }
    for (const output of ['line 1\\nline 2 ünïcödé 🚀', 'x'.repeat(40), 'retried with sudo']) expect(text.split(output).length - 1).toBe(1);
    // the elided step keeps its full record (with elided) as the entry, its short text in the view
    const elided = content.records.find((r) => r.type === 'step_logged' && r.elided)!;
    expect(chainEntryOf(elided)).toMatchObject({ seq: elided.seq, elided: { output: { state: 'truncated', length: 300 } } });
    expect(chainEntryOf(elided)).not.toHaveProperty('output');
  });

  it('writes step views with seq first and task heads in TaskView order ending in "steps":[', () => {
    const step = doc.tasks[0].steps[1];
    expect(stepViewLine(step, true, WRITER)).toMatch(/^\{"seq":\d+,"step":2,"command":/);
    expect(JSON.parse(stepViewLine(step, true, WRITER))).toEqual(step);
    expect(stepViewLine(step, false, WRITER).startsWith(',{"seq":')).toBe(true);
    const head = taskHeadLine(doc.tasks[0], true);
    expect(head.endsWith(',"steps":[\n')).toBe(true);
    expect(JSON.parse(`${head.trim()}]}`)).toEqual({ ...doc.tasks[0], steps: [] });
    const { steps: _steps, ...withoutSteps } = doc.tasks[0];
    expect(taskHeadLine(withoutSteps, false)).toBe(`,${head}`);
    expect(Object.keys(JSON.parse(`${head.trim()}]}`))).toEqual(Object.keys(doc.tasks[0]));
  });

  it('rebuilds every kept step record exactly from its view, the previous hash and its entry hash', () => {
    let rebuilt = 0;
    for (const task of doc.tasks) {
      for (const view of task.steps) {
        const original = stepRecords.get(view.seq)!;
        if (original.elided) continue;
        const prev = fixture.records[view.seq - 2].hash;
        const record = rebuildStepRecord(expandStepView(view, task.writer), task.task_id, prev, original.hash, sha256Hex);
        expect(recordHash(record, sha256Hex)).toBe(original.hash);
        expect(record).toEqual(original);
        rebuilt++;
      }
    }
    expect(rebuilt).toBe(3);
    // a changed view no longer rebuilds its record
    const view = { ...doc.tasks[0].steps[0], output: 'line 1\nline 2 ünïcödé 🚀!' };
    const original = stepRecords.get(view.seq)!;
    expect(recordHash(rebuildStepRecord(view, 't-a', original.prev_hash, original.hash, sha256Hex), sha256Hex)).not.toBe(original.hash);
  });

  it('gives back every kept record, large fields included, from a v2 or a v1 document', () => {
    expect(dataFileContent(doc, sha256Hex).records).toEqual(JSON.parse(JSON.stringify(content.records)));
    expect(dataFileContent(v1Doc(content), sha256Hex).records).toBe(content.records);
  });

  it('copies the writer onto the task and step views', () => {
    const [task] = tasksFromRecords(content.records).values();
    expect(task.writer).toEqual(WRITER);
    expect(task.steps[0].writer).toEqual(WRITER);
    expect(task.steps[1]).not.toHaveProperty('writer');
    expect(stepViewOf(stepRecords.get(task.steps[0].seq)!)).toEqual(task.steps[0]);
  });

  it('writes a step writer that is its task\'s as "task", any other whole, and reads "task" back as the task\'s', () => {
    expect(doc.tasks[0].writer).toEqual(WRITER);
    expect(doc.tasks[0].steps[0].writer).toBe(TASK_WRITER);
    expect(doc.tasks[0].steps[1]).not.toHaveProperty('writer');
    expect(dataFileContent(doc, sha256Hex).tasks[0].steps[0].writer).toEqual(WRITER);
    const [task] = tasksFromRecords(content.records).values();
    const other = { ...task.steps[0], writer: { ...WRITER, pid: 4243 } };
    expect(JSON.parse(stepViewLine(other, true, WRITER)).writer).toEqual(other.writer);
    expect(JSON.parse(stepViewLine(task.steps[0], true, undefined)).writer).toEqual(WRITER);
    expect(stepViewLine(task.steps[0], true, WRITER)).toContain(',"writer":"task"}');
    expect(expandStepView(JSON.parse(stepViewLine(task.steps[0], true, WRITER)), WRITER)).toEqual(task.steps[0]);
  });

  it('encodes an empty chain, no tasks and a task without steps as valid JSON', () => {
    const empty = new ChainFixture().content();
    const emptyLines = [...dataFileV2Lines(empty)];
    expect(emptyLines.slice(1)).toEqual([TASKS_SECTION_LINE, DOCUMENT_END_LINE]);
    expect(JSON.parse(emptyLines.join(''))).toMatchObject({ tasks: [], count: 0, chain: { anchor: { seq: 0 }, entries: [] } });
    const one = new ChainFixture();
    one.createTask('t-1');
    const oneLines = [...dataFileV2Lines(one.content())];
    expect(oneLines.length).toBe(6);
    expect(JSON.parse(oneLines.join('')).tasks[0].steps).toEqual([]);
  });

  it('decodes its own lines for a scan, and answers null to anything in another layout', () => {
    expect(parseHeader(lines[0].slice(0, -1))).toEqual({ machine_id: 'm-1', max_tasks: 10, count: 3, head: content.head, anchor: content.anchor });
    const entries = lines.slice(1, 1 + content.head.seq - content.anchor.seq);
    const withoutComma = (line: string) => Buffer.from(line.slice(line.startsWith(',') ? 1 : 0, -1), 'utf8');
    let stubs = 0;
    entries.forEach((line, i) => {
      const record = fixture.records[3 + i];
      const bytes = withoutComma(line);
      const whole = parseEntryRecord(line.slice(0, -1));
      if (whole) {
        expect(whole).toEqual(JSON.parse(line.replace(/^,/, '')) as ChainRecord);
        expect(stubSeqAt(bytes, 0, bytes.length)).toBe(-1);
      } else {
        stubs++;
        expect(JSON.parse(bytes.toString())).toEqual([record.seq, record.hash]);
        expect(stubSeqAt(bytes, 0, bytes.length)).toBe(record.seq);
        const decoded = Buffer.alloc(34);
        expect(readStubInto(bytes, 0, bytes.length, decoded, 1)).toBe(record.seq);
        expect(decoded.toString('hex', 1, 33)).toBe(record.hash);
      }
    });
    expect(stubs).toBeGreaterThan(0);
    const heads = lines.filter((l) => isTaskHeadLine(l.slice(0, -1)));
    expect(heads.map((l) => parseTaskHead(l.slice(0, -1)))).toEqual(doc.tasks.map(({ steps: _s, ...head }) => head));
    const stepLines = lines.filter((l) => /^,?\{"seq":/.test(l));
    expect(stepLines.map(withoutComma).map((bytes) => stepViewSeqAt(bytes, 0, bytes.length))).toEqual(doc.tasks.flatMap((t) => t.steps.map((s) => s.seq)));
    const hash = 'a'.repeat(64);
    const foreignStubs = [`[ 4, "${hash}"]`, `[4,"${'A'.repeat(64)}"]`, `[4,"${hash.slice(1)}g"]`, `[4,"${hash}0"]`, `[,"${hash}"]`, `[4x,"${hash}"]`, `[99999999999999999,"${hash}"]`, `[9007199254740993,"${hash}"]`, `[4,'${hash}']`, '[4]', ''];
    for (const foreign of foreignStubs) {
      expect(stubSeqAt(Buffer.from(foreign), 0, foreign.length), foreign).toBe(-1);
      expect(readStubInto(Buffer.from(foreign), 0, foreign.length, Buffer.alloc(32), 0), foreign).toBe(-1);
    }
    const framed = `x[9007199254740991,"${hash}"]y`;
    expect(stubSeqAt(Buffer.from(framed), 1, framed.length - 1)).toBe(9007199254740991);
    for (const foreign of ['{ "seq": 4, "step": 1}', '{"seq":4}', '{"seq":,', '{"seq":12345678901234567,', '{"seq":4x,', '{"seq"', '']) {
      expect(stepViewSeqAt(Buffer.from(foreign), 0, foreign.length), foreign).toBe(-1);
    }
    expect(stepViewSeqAt(Buffer.from('{"seq":0012,"step":1}'), 0, 21)).toBe(12);
    for (const foreign of ['[4,"' + hash + '"]', '{"seq": 4}', 'not json', '']) expect(parseEntryRecord(foreign)).toBeNull();
    expect(parseHeader(JSON.stringify(JSON.parse(text), null, 2).split('\n')[0])).toBeNull();
    expect(parseTaskHead('{"task_id":"t", "seq": "x","steps":[')).toBeNull();
    expect(isTaskHeadLine(stepLines[0].slice(0, -1))).toBe(false);
  });

  it('entryLine strips large fields from a full record it is given', () => {
    const elided = content.records.find((r) => r.type === 'step_logged' && r.elided)! as StepLoggedRecord;
    expect(elided.output).toBeDefined();
    expect(JSON.parse(entryLine(elided, true))).not.toHaveProperty('output');
    expect(elided.output).toBeDefined(); // the caller's record is left as it was
  });

  it("is read by the original Python model's from_dict with every output intact", async () => {
    const file = join(tempDir('taskhistory-v2-'), 'task_history.json');
    writeFileSync(file, text);
    const run = await runPython([join(PYTHON_TEST_DIR, 'load_with_original.py'), file], [PYTHON_TEST_DIR]);
    expect(run.code, run.stderr).toBe(0);
    const loaded = lastJsonLine(run);
    expect(loaded.max_tasks).toBe(10);
    expect(loaded.tasks.map((t: { task_id: string; steps: unknown[] }) => [t.task_id, t.steps])).toEqual([
      ['t-a', [
        [1, 'cmd 1 "quoted" \\ ✓', 'success', 'line 1\nline 2 ünïcödé 🚀', null],
        [2, 'cmd 2 "quoted" \\ ✓', 'failed', null, 'permission denied'],
        [3, 'cmd 3 "quoted" \\ ✓', 'success', 'x'.repeat(40), null],
      ]],
      ['t-empty', []],
      ['t-run', [[1, 'cmd 1 "quoted" \\ ✓', 'success', null, null]]],
      [expect.stringMatching(/^task_/), []],
    ]);
  });
});
