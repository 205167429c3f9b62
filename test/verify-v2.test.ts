import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseDataFile, reportFrom, verifyDataFile, type VerifyReason } from '../protocol/chain-verify.js';
import { DATA_FILE_FORMAT_V1, DATA_FILE_NAME, journalLine, journalSegmentName, type DataFileV2 } from '../protocol/data-file.js';
import { dataFileV2Lines, DOCUMENT_END_LINE, entryLine, headerLine, stepViewLine, TASK_END_LINE, taskHeadLine, TASKS_SECTION_LINE } from '../protocol/data-file-v2.js';
import type { SeqHashes } from '../protocol/data-file-v2-verify.js';
import type { ChainRecord } from '../protocol/records.js';
import { readJournalRecords } from '../node/journal-files.js';
import { SharedSeqHashes } from '../node/shared-seq-hashes.js';
import { sha256Hex } from '../node/sha256.js';
import { verifyDataFileOnDisk } from '../node/verify-files.js';
import { ChainFixture, variedChain, WRITER } from './chain-fixture.js';
import { tempDir } from './processes.js';
import { PYTHON_TEST_DIR, lastJsonLine, runPython } from './python/run-python.js';

/**
 * taskhistory/2 files, intact and tampered, through the three verifiers: the TS streaming one
 * (verifyDataFileOnDisk on the daemon's line layout, also as the daemon's worker runs it, with the
 * hashes the daemon read from the intact file), the TS doc verifier (parseDataFile + verifyDataFile
 * on the whole text) and the independent Python one. They must agree on the verdict, the reason
 * and the first bad seq.
 */

interface Verdict {
  ok: boolean;
  reason: VerifyReason | null;
  first_bad_seq: number | null;
}

const { fixture, trimmed } = variedChain();
/** The file holds seq 1..JOURNAL_FROM-1; the last records are in a journal segment beside it. */
const JOURNAL_FROM = fixture.records.length - 1;
const content = fixture.content(trimmed, 10, JOURNAL_FROM - 1);
const journal = fixture.records.slice(JOURNAL_FROM - 1);
const intact = [...dataFileV2Lines(content)].join('');

/** The daemon's layout for a (possibly tampered) parsed v2 document. */
function canonicalText(doc: DataFileV2): string {
  const lines = [headerLine({ machine_id: doc.machine_id, max_tasks: doc.max_tasks, count: doc.count, head: doc.head, anchor: doc.chain.anchor })];
  doc.chain.entries.forEach((entry, i) => lines.push(entryLine(entry, i === 0)));
  lines.push(TASKS_SECTION_LINE);
  doc.tasks.forEach((task, t) => {
    lines.push(taskHeadLine(task, t === 0));
    task.steps.forEach((step, i) => lines.push(stepViewLine(step, i === 0, task.writer)));
    lines.push(TASK_END_LINE);
  });
  lines.push(DOCUMENT_END_LINE);
  return lines.join('');
}

function tampered(edit: (doc: DataFileV2) => void): string {
  const doc = JSON.parse(intact) as DataFileV2;
  edit(doc);
  return canonicalText(doc);
}

/** A data dir holding `text` as its data file and the journal segment (records as given). */
function dataDirWith(text: string, journalRecords = journal): string {
  const dir = join(tempDir('taskhistory-v2-verify-'), 'data');
  mkdirSync(dir);
  writeFileSync(join(dir, DATA_FILE_NAME), text);
  if (journalRecords.length) writeFileSync(join(dir, journalSegmentName(journalRecords[0].seq)), journalRecords.map(journalLine).join(''));
  return join(dir, DATA_FILE_NAME);
}

/**
 * The hashes a daemon holds after reading the intact file, as its index shares them with the verify
 * worker: from a few seqs after the anchor on (the seqs before were dropped from its index since,
 * so the verifier keeps those itself), in chunks of 3 seqs.
 */
function daemonHashes(records: ChainRecord[], from: number): (firstSeq: number) => SeqHashes {
  const chunkRecords = 3;
  const covered = records.filter((record) => record.seq >= from);
  const chunks: SharedArrayBuffer[] = [];
  covered.forEach((record, i) => {
    if (i % chunkRecords === 0) chunks.push(new SharedArrayBuffer(chunkRecords * 32));
    Buffer.from(chunks[chunks.length - 1]).write(record.hash, (i % chunkRecords) * 32, 'hex');
  });
  const shared = { firstSeq: from, lastSeq: covered[covered.length - 1].seq, chunkRecords, chunks };
  return (firstSeq) => new SharedSeqHashes(shared, firstSeq);
}
const intactHashes = daemonHashes(fixture.records, content.anchor.seq + 3);

const verdict = (r: { ok: boolean; reason: VerifyReason | null; first_bad_seq: number | null }): Verdict => ({ ok: r.ok, reason: r.reason, first_bad_seq: r.first_bad_seq });

async function allVerdicts(text: string, journalRecords = journal, hashes = intactHashes): Promise<{ streamed: Verdict; shared: Verdict; doc: Verdict; python: Verdict }> {
  const file = dataDirWith(text, journalRecords);
  const streamed = verdict(verifyDataFileOnDisk(file));
  const shared = verdict(verifyDataFileOnDisk(file, hashes));
  const doc = verdict(reportFrom(() => verifyDataFile(parseDataFile(text), sha256Hex, readJournalRecords(join(file, '..')))));
  const run = await runPython([join(PYTHON_TEST_DIR, 'verify_chain.py'), file], []);
  expect(run.stderr).toBe('');
  const python = verdict(lastJsonLine(run));
  return { streamed, shared, doc, python };
}

async function expectVerdict(text: string, want: Verdict, journalRecords = journal, hashes = intactHashes): Promise<void> {
  const verdicts = await allVerdicts(text, journalRecords, hashes);
  expect(verdicts).toEqual({ streamed: want, shared: want, doc: want, python: want });
}

const OK: Verdict = { ok: true, reason: null, first_bad_seq: null };
const bad = (reason: VerifyReason, seq: number | null): Verdict => ({ ok: false, reason, first_bad_seq: seq });

const taskA = () => content.tasks[0];
const stepSeq = (index: number) => taskA().steps[index].seq;
const elidedSeq = content.records.find((r) => r.type === 'step_logged' && r.elided)!.seq;
const entryIndex = (seq: number) => seq - content.anchor.seq - 1;

describe('verifying taskhistory/2 files', () => {
  it('an intact file with its journal verifies in all three verifiers, with the same head', async () => {
    await expectVerdict(intact, OK);
    const file = dataDirWith(intact);
    const report = verifyDataFileOnDisk(file);
    expect(report.head).toEqual({ seq: fixture.records.at(-1)!.seq, hash: fixture.records.at(-1)!.hash });
    expect(report.checked).toBe(content.head.seq - content.anchor.seq - content.stubs.length + journal.length);
    const python = lastJsonLine(await runPython([join(PYTHON_TEST_DIR, 'verify_chain.py'), file], []));
    expect([python.head_seq, python.head_hash]).toEqual([report.head!.seq, report.head!.hash]);
  });

  it('a re-indented, key-reordered but intact v2 document verifies (parsed whole)', async () => {
    const doc = JSON.parse(intact) as DataFileV2;
    const { tasks, ...rest } = doc;
    await expectVerdict(JSON.stringify({ tasks, ...rest }, null, 2), OK);
  });

  it('a v1 document of the same records still verifies', async () => {
    const v1 = { format: DATA_FILE_FORMAT_V1, machine_id: 'm-1', tasks: content.tasks, count: content.tasks.length, max_tasks: 10, head: content.head, chain: { anchor: content.anchor, stubs: content.stubs, records: content.records } };
    await expectVerdict(JSON.stringify(v1), OK);
  });

  it('a step view naming its task\'s writer ("task") verifies; a changed task writer, or "task" where the step had none, is changed content', async () => {
    expect((JSON.parse(intact) as DataFileV2).tasks[0].steps[0].writer).toBe('task');
    await expectVerdict(tampered((doc) => (doc.tasks[0].writer!.pid += 1)), bad('changed content', taskA().seq));
    await expectVerdict(tampered((doc) => ((doc.tasks[0].steps[1] as { writer?: unknown }).writer = 'task')), bad('changed content', stepSeq(1)));
    await expectVerdict(tampered((doc) => (doc.tasks[0].steps[0].writer = { ...WRITER, pid: WRITER.pid + 1 })), bad('changed content', stepSeq(0)));
  });

  it('an edited output in a step view is changed content at that step', async () => {
    await expectVerdict(tampered((doc) => (doc.tasks[0].steps[0].output += '!')), bad('changed content', stepSeq(0)));
  });

  it('a changed entry hash is changed content at its seq', async () => {
    const seq = stepSeq(1);
    await expectVerdict(
      tampered((doc) => {
        const entry = doc.chain.entries[entryIndex(seq)] as [number, string];
        entry[1] = `${entry[1][0] === 'a' ? 'b' : 'a'}${entry[1].slice(1)}`;
      }),
      bad('changed content', seq),
    );
  });

  it('a dropped view of a step kept as a full record is a missing record', async () => {
    await expectVerdict(tampered((doc) => (doc.tasks[0].steps = doc.tasks[0].steps.filter((s) => s.seq !== elidedSeq))), bad('missing record', elidedSeq));
  });

  it('two swapped entries are reordered records at the first', async () => {
    const seq = stepSeq(0);
    await expectVerdict(
      tampered((doc) => {
        const i = entryIndex(seq);
        [doc.chain.entries[i], doc.chain.entries[i + 1]] = [doc.chain.entries[i + 1], doc.chain.entries[i]];
      }),
      bad('reordered records', seq),
    );
  });

  it('a deleted entry is a missing record', async () => {
    const seq = stepSeq(1);
    await expectVerdict(tampered((doc) => doc.chain.entries.splice(entryIndex(seq), 1)), bad('missing record', seq));
  });

  it('an extra key in a step view is changed content at that step', async () => {
    await expectVerdict(tampered((doc) => Object.assign(doc.tasks[0].steps[1], { note: 'added' })), bad('changed content', stepSeq(1)));
  });

  it('a step view moved to another task is changed content at its seq', async () => {
    const seq = stepSeq(0);
    await expectVerdict(tampered((doc) => doc.tasks[1].steps.unshift(doc.tasks[0].steps.shift()!)), bad('changed content', seq));
  });

  it('an edited task head or task_created entry is changed content at the task', async () => {
    const seq = taskA().seq;
    await expectVerdict(tampered((doc) => (doc.tasks[0].description += '!')), bad('changed content', seq));
    await expectVerdict(tampered((doc) => ((doc.chain.entries[entryIndex(seq)] as { description: string }).description += '!')), bad('changed content', seq));
  });

  it('a head that does not match the last entry, or a wrong count, is caught', async () => {
    await expectVerdict(tampered((doc) => (doc.head.hash = doc.head.hash.replace(/^./, (c) => (c === 'a' ? 'b' : 'a')))), bad('changed content', content.head.seq));
    await expectVerdict(tampered((doc) => (doc.head.seq += 1)), bad('missing record', content.head.seq + 1));
    await expectVerdict(tampered((doc) => (doc.count += 1)), bad('changed content', null));
  });

  it('a changed record in the journal after the file is changed content at its seq', async () => {
    const edited = journal.map((r, i) => (i === 0 ? { ...r, ts: r.ts + 1 } : r));
    await expectVerdict(intact, bad('changed content', journal[0].seq), edited);
  });

  it('an empty history verifies, and a file cut short is unreadable', async () => {
    await expectVerdict([...dataFileV2Lines(new ChainFixture().content())].join(''), OK, []);
    await expectVerdict(intact.slice(0, intact.length - 10), bad('unreadable file', null), []);
  });

  it('a multi-megabyte file with long outputs streams to the same verdict as the doc verifier', async () => {
    const big = new ChainFixture();
    big.createTask('t-big');
    for (let i = 1; i <= 400; i++) big.logStep('t-big', i, { output: `${i} ${'o'.repeat(8_000 + i)}`, ...(i % 50 === 0 && { error: 'e'.repeat(3 * 1024 * 1024) }) });
    big.complete('t-big');
    const text = [...dataFileV2Lines(big.content())].join('');
    expect(text.length).toBeGreaterThan(20 * 1024 * 1024);
    const bigHashes = daemonHashes(big.records, 1);
    await expectVerdict(text, OK, [], bigHashes);
    const doc = JSON.parse(text) as DataFileV2;
    doc.tasks[0].steps[299].output = doc.tasks[0].steps[299].output!.replace('o', '0');
    await expectVerdict(canonicalText(doc), bad('changed content', doc.tasks[0].steps[299].seq), [], bigHashes);
  });

  it('every single-character change gets the same verdict from all three verifiers (the streaming one with and without the daemon\'s hashes), and one in "tasks" is caught', async () => {
    const tasksStart = intact.indexOf(TASKS_SECTION_LINE);
    const elidedLine = intact.split('\n').find((l) => l.includes(`{"seq":${elidedSeq},`))!;
    const elidedOutput = intact.indexOf(elidedLine) + elidedLine.indexOf('"output"');
    let caught = 0;
    const files: string[] = [];
    const verdicts: (Verdict & { at: string })[] = [];
    for (let i = 0; i < intact.length; i++) {
      const c = intact[i];
      if (!/[0-9a-z]/i.test(c)) continue;
      const changed = `${intact.slice(0, i)}${/[0-9]/.test(c) ? String((Number(c) + 1) % 10) : c === 'a' ? 'b' : 'a'}${intact.slice(i + 1)}`;
      const file = dataDirWith(changed, []);
      const streamed = verifyDataFileOnDisk(file);
      const whole = reportFrom(() => verifyDataFile(parseDataFile(changed), sha256Hex));
      expect({ at: i, ok: streamed.ok, reason: streamed.reason, seq: streamed.first_bad_seq }).toEqual({ at: i, ok: whole.ok, reason: whole.reason, seq: whole.first_bad_seq });
      expect({ at: i, ...verdict(verifyDataFileOnDisk(file, intactHashes)) }).toEqual({ at: i, ...verdict(streamed) });
      files.push(file);
      verdicts.push({ at: `${i}: ${changed.slice(Math.max(0, i - 20), i + 20)}`, ok: streamed.ok, reason: streamed.reason, first_bad_seq: streamed.first_bad_seq });
      // an elided output's text is not covered by its digest (as in v1)
      const inElidedText = i > elidedOutput && i < elidedOutput + 60;
      if (i > tasksStart && !inElidedText) {
        expect({ at: i, ok: streamed.ok }).toEqual({ at: i, ok: false });
        caught++;
      }
    }
    expect(caught).toBeGreaterThan(500);
    // The Python verifier on every changed file, in one process.
    const listFile = join(tempDir('taskhistory-v2-fuzz-'), 'files.json');
    writeFileSync(listFile, JSON.stringify(files));
    const code = 'import json, sys\nimport verify_chain\nfor path in json.load(open(sys.argv[1])):\n    r = verify_chain.verify(path)\n    print(json.dumps({"ok": r["ok"], "reason": r["reason"], "first_bad_seq": r["first_bad_seq"]}))';
    const run = await runPython(['-c', code, listFile], [PYTHON_TEST_DIR]);
    expect(run.stderr).toBe('');
    const python = run.stdout.trim().split('\n').map((l) => JSON.parse(l) as Verdict);
    expect(python.map((v, i) => ({ at: verdicts[i].at, ...v }))).toEqual(verdicts);
  }, 120_000);
});
