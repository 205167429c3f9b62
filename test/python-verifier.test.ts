import { cpSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { isJournalSegmentName } from '../protocol/data-file.js';
import { verifyDataFileOnDisk } from '../node/verify-files.js';
import { openRawSocket, startDaemon, type RawSocket } from './daemon-harness.js';
import { readDataFileContent, version1TextOf } from './data-file-reading.js';
import { tempDir } from './processes.js';
import { PYTHON_TEST_DIR, lastJsonLine, runPython } from './python/run-python.js';

const VERIFIER = join(PYTHON_TEST_DIR, 'verify_chain.py');

/**
 * Raw JSON text, so the daemon parses the number spellings itself (1E21, -0.0, 2.50, a 21-digit
 * integer...) and the canonical form has to reproduce ECMAScript's formatting of each.
 */
const NASTY_PLAN = String.raw`[
  {"step": 1, "command": "echo \"hi\" \\ done", "ñame": "日本語", "emoji": "🎉👩‍👩‍👧", "ctl": "a\u0000b\u001fc\td\n\r\b\f\u007f",
   "floats": [0.1, 1e-7, 1e21, 1E21, 123456789012345678901, -0, -0.0, 1.0, 2.50, -1.5e-300, 9007199254740993, 1e-6, 0.000001, 5e-324, 1.7976931348623157e308],
   "big": -123456789012, "nested": {"ζ": {"é": [true, false, null]}, "Z": 1, "a": 2, "\ud83d\ude00": "astral key", "\uffff": "last BMP key", "": "empty key"}},
  {"step": 2, "pair": "\ud83d\ude00 a whole pair (a lone half is refused: strict-json.test.ts)", "sep": "\u2028\u2029"},
  "a plain string step", 42, null, [[]]
]`;

interface Written {
  dataFile: string;
  /** The same history rendered as a taskhistory/1 file: the tamper cases below edit that format (verify-v2.test.ts edits v2). */
  v1File: string;
  headSeq: number;
  headHash: string;
  seqs: { plan: number; output: number; truncated: number; timing: number; completed: number };
}

let lastId = 0;
async function rawCall(raw: RawSocket, method: string, paramsText: string): Promise<any> {
  const id = ++lastId;
  raw.send(`{"jsonrpc":"2.0","id":${id},"method":"${method}","params":${paramsText}}`);
  for (;;) {
    const message = await raw.next();
    if (message.id === null) throw new Error(`${method}: the daemon could not read the request: ${JSON.stringify(message.error)}`);
    if (message.id !== id) continue;
    if (message.error) throw new Error(`${method}: ${JSON.stringify(message.error)}`);
    return message.result;
  }
}

/** Logs tasks full of awkward values through a real daemon, stops it with SIGTERM, returns where things are. */
async function writeNastyChain(): Promise<Written> {
  const daemon = await startDaemon();
  const raw = await openRawSocket(daemon.socketPath);
  const created = await rawCall(raw, 'create_task', String.raw`{"description": "Ünïcödé 🎉 \"quoted\" back\\slash\ttab", "mode": "step-by-step", "steps": ${NASTY_PLAN}, "agent": "verifier-test"}`);
  const id = JSON.stringify(created.task_id);
  const output = await rawCall(raw, 'log_step', String.raw`{"task_id": ${id}, "step_num": 1, "command": "printf 'x\\ty'", "status": "success", "output": "x\ty ✓ \u0001 \"q\"", "error": "warn: ünï", "recovery": "none needed"}`);
  const truncated = await rawCall(raw, 'log_step', `{"task_id": ${id}, "step_num": 2, "command": "yes | head", "status": "failed", "output": ${JSON.stringify('y\n'.repeat(40_000))}, "exit_code": -1}`);
  const timing = await rawCall(raw, 'log_step', `{"task_id": ${id}, "step_num": 3, "command": "sleep 0", "status": "success", "started_at": 1700000000.123456, "duration_ms": 0.1, "exit_code": 0}`);
  const completed = await rawCall(raw, 'complete_task', `{"task_id": ${id}, "final_status": "completed"}`);
  const other = await rawCall(raw, 'create_task', `{"description": "still running", "mode": "autonomous", "steps": [{"n": 1e-7}]}`);
  await rawCall(raw, 'log_step', `{"task_id": ${JSON.stringify(other.task_id)}, "step_num": 1, "command": "true", "status": "success", "duration_ms": 1e21}`);
  const status = await rawCall(raw, 'status', '{}');
  raw.close();
  expect((await daemon.stop()).code).toBe(0);
  const v1File = join(tempDir('v1-'), 'task_history.json');
  writeFileSync(v1File, version1TextOf(daemon.dataFile));
  return {
    dataFile: daemon.dataFile,
    v1File,
    headSeq: status.last_seq,
    headHash: status.head_hash,
    seqs: { plan: created.seq, output: output.seq, truncated: truncated.seq, timing: timing.seq, completed: completed.seq },
  };
}

async function pythonVerify(dataFile: string): Promise<{ code: number | null; report: any }> {
  const run = await runPython([VERIFIER, dataFile], []);
  return { code: run.code, report: lastJsonLine(run) };
}

/** A copy of the data dir with `edit` applied to the parsed data file. */
function tamperedCopy(dataFile: string, edit: (doc: any) => void): string {
  const dir = tempDir('tampered-');
  cpSync(join(dataFile, '..'), dir, { recursive: true });
  const copy = join(dir, 'task_history.json');
  const doc = JSON.parse(readFileSync(copy, 'utf8'));
  edit(doc);
  writeFileSync(copy, JSON.stringify(doc, null, 2));
  return copy;
}

/** `text` with the character at `index` replaced by a different one. */
function oneCharChanged(text: string, index = 0): string {
  const replacement = text[index] === 'x' ? 'y' : 'x';
  return text.slice(0, index) + replacement + text.slice(index + 1);
}

const recordAt = (doc: any, seq: number) => doc.chain.records.find((r: any) => r.seq === seq);

describe('independent Python verifier of the chain', () => {
  let written: Written;
  beforeAll(async () => {
    written = await writeNastyChain();
  });

  it('verifies the chain the daemon wrote and reaches the head the daemon reported', async () => {
    const doc = { chain: { records: readDataFileContent(written.dataFile).records } };
    // The cases this test exists for really are in the file.
    expect(recordAt(doc, written.seqs.truncated).output).toMatch(/truncated by taskhistory: 80000 bytes in all\]$/);
    expect(recordAt(doc, written.seqs.plan).plan[0].floats).toContain(1e21);

    const { code, report } = await pythonVerify(written.dataFile);
    expect(report).toMatchObject({ ok: true, first_bad_seq: null, reason: null, head_seq: written.headSeq, head_hash: written.headHash });
    expect(report.checked).toBe(written.headSeq);
    expect(code).toBe(0);
    expect((await pythonVerify(written.v1File)).report).toMatchObject({ ok: true, head_seq: written.headSeq, head_hash: written.headHash });
  });

  it('reads the journal beside the checkpoint: records a SIGKILL left only there are verified too', async () => {
    const dataDir = join(tempDir('restarted-'), 'data');
    cpSync(join(written.dataFile, '..'), dataDir, { recursive: true });
    const daemon = await startDaemon({ dataDir });
    const raw = await openRawSocket(daemon.socketPath);
    const task = await rawCall(raw, 'create_task', '{"description": "after restart ✓", "mode": "autonomous", "steps": [0.30000000000000004]}');
    await rawCall(raw, 'log_step', `{"task_id": ${JSON.stringify(task.task_id)}, "step_num": 1, "command": "echo é", "status": "success", "output": "é"}`);
    const status = await rawCall(raw, 'status', '{}');
    await daemon.stop('SIGKILL');
    expect(readdirSync(dataDir).filter(isJournalSegmentName).length, 'a journal segment survives SIGKILL').toBeGreaterThan(0);

    const { code, report } = await pythonVerify(daemon.dataFile);
    expect(report).toMatchObject({ ok: true, head_seq: status.last_seq, head_hash: status.head_hash });
    expect(code).toBe(0);

    // One changed character inside a journal line names that record.
    const segment = readdirSync(dataDir).filter(isJournalSegmentName).sort().pop()!;
    const copyDir = tempDir('tampered-journal-');
    cpSync(dataDir, copyDir, { recursive: true });
    const journalText = readFileSync(join(copyDir, segment), 'utf8');
    writeFileSync(join(copyDir, segment), journalText.replace('after restart ✓', 'after restart ✗'));
    const tampered = await pythonVerify(join(copyDir, 'task_history.json'));
    expect(tampered.report).toMatchObject({ ok: false, first_bad_seq: task.seq, reason: 'changed content' });
    expect(tampered.code).toBe(1);
  });

  const cases: { name: string; edit: (doc: any, w: Written) => void; seq: (w: Written) => number | null; reason: string }[] = [
    {
      name: 'one character of a description',
      edit: (doc, w) => (recordAt(doc, w.seqs.plan).description = oneCharChanged(recordAt(doc, w.seqs.plan).description, 3)),
      seq: (w) => w.seqs.plan,
      reason: 'changed content',
    },
    {
      name: 'one character of a non-ASCII key deep in the plan',
      edit: (doc, w) => {
        const nested = recordAt(doc, w.seqs.plan).plan[0].nested;
        nested['η'] = nested['ζ'];
        delete nested['ζ'];
      },
      seq: (w) => w.seqs.plan,
      reason: 'changed content',
    },
    {
      name: 'one character of an output (checked through its digest)',
      edit: (doc, w) => (recordAt(doc, w.seqs.output).output = oneCharChanged(recordAt(doc, w.seqs.output).output)),
      seq: (w) => w.seqs.output,
      reason: 'changed content',
    },
    {
      name: 'one digit of a float',
      edit: (doc, w) => (recordAt(doc, w.seqs.timing).duration_ms = 0.2),
      seq: (w) => w.seqs.timing,
      reason: 'changed content',
    },
    {
      name: 'one character of a step in the task view only',
      edit: (doc) => (doc.tasks[0].steps[0].command = oneCharChanged(doc.tasks[0].steps[0].command)),
      seq: (w) => w.seqs.output,
      reason: 'changed content',
    },
    {
      name: 'the final status in the task view only',
      edit: (doc) => (doc.tasks[0].status = 'failed'),
      seq: (w) => w.seqs.completed,
      reason: 'changed content',
    },
    {
      name: 'a deleted record',
      edit: (doc, w) => (doc.chain.records = doc.chain.records.filter((r: any) => r.seq !== w.seqs.timing)),
      seq: (w) => w.seqs.timing,
      reason: 'missing record',
    },
    {
      name: 'two records swapped',
      edit: (doc, w) => {
        const i = doc.chain.records.findIndex((r: any) => r.seq === w.seqs.output);
        [doc.chain.records[i], doc.chain.records[i + 1]] = [doc.chain.records[i + 1], doc.chain.records[i]];
      },
      seq: (w) => w.seqs.output,
      reason: 'reordered records',
    },
    {
      name: 'a forged anchor',
      edit: (doc) => (doc.chain.anchor.hash = 'f'.repeat(64)),
      seq: () => 1,
      reason: 'bad anchor',
    },
  ];

  for (const { name, edit, seq, reason } of cases) {
    it(`names the seq of ${name}, as the protocol's own verifier does`, async () => {
      const copy = tamperedCopy(written.v1File, (doc) => edit(doc, written));
      const { code, report } = await pythonVerify(copy);
      expect(report).toMatchObject({ ok: false, first_bad_seq: seq(written), reason, head_seq: null, head_hash: null });
      expect(code).toBe(1);
      const reference = verifyDataFileOnDisk(copy);
      expect([reference.ok, reference.first_bad_seq, reference.reason]).toEqual([false, seq(written), reason]);
    });
  }

  it('accepts a large field shortened later when its record marks it elided, and only then', async () => {
    const shorten = (doc: any, markElided: boolean) => {
      const record = recordAt(doc, written.seqs.output);
      const length = Buffer.byteLength(record.output);
      record.output = record.output.slice(0, 3);
      if (markElided) record.elided = { output: { state: 'truncated', length } };
      doc.tasks[0].steps[0].output = record.output;
    };
    const marked = await pythonVerify(tamperedCopy(written.v1File, (doc) => shorten(doc, true)));
    expect(marked.report).toMatchObject({ ok: true, head_hash: written.headHash });
    const unmarked = await pythonVerify(tamperedCopy(written.v1File, (doc) => shorten(doc, false)));
    expect(unmarked.report).toMatchObject({ ok: false, first_bad_seq: written.seqs.output, reason: 'changed content' });
  });

  it('reports a truncated file as unreadable', async () => {
    const dir = tempDir('truncated-');
    const copy = join(dir, 'task_history.json');
    const text = readFileSync(written.dataFile, 'utf8');
    writeFileSync(copy, text.slice(0, Math.floor(text.length / 2)));
    const { code, report } = await pythonVerify(copy);
    expect(report).toMatchObject({ ok: false, reason: 'unreadable file', first_bad_seq: null });
    expect(code).toBe(1);
  });
});
