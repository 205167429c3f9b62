import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { VerifyReason, VerifyReport } from '../protocol/chain-verify.js';
import { DATA_FILE_NAME, isJournalSegmentName, type DataFile } from '../protocol/data-file.js';
import { verifyDataFileOnDisk } from '../node/verify-files.js';
import { openRawSocket, startDaemon, type RawSocket } from './daemon-harness.js';
import { tempDir } from './processes.js';
import { version1TextOf } from './data-file-reading.js';

/**
 * Tampering with task_history.json while no daemon runs: every single-character change to a stored
 * record or to the `tasks` view, a deleted, reordered or truncated record, a bad anchor, and the
 * stubs of a trimmed file are caught by the offline verifier, naming the seq and the reason, and
 * the daemon refuses to start on such a file without touching it.
 */

/** Record keys the verifier needs to even read a record: a change there makes the file unreadable. */
const HEADER_KEYS = new Set(['seq', 'hash', 'prev_hash', 'ts', 'type', 'task_id']);

interface History {
  /** The daemon's history at shutdown, as a taskhistory/1 file (written back in its place). */
  text: string;
  doc: DataFile;
}

/** Runs `script` against a fresh daemon, stops it with SIGTERM and returns the file it left. */
async function writeHistory(daemonArgs: string[], script: (raw: RawSocket) => Promise<void>): Promise<History> {
  const daemon = await startDaemon({ args: daemonArgs });
  const raw = await openRawSocket(daemon.socketPath);
  await script(raw);
  raw.close();
  expect(await daemon.stop()).toEqual({ code: 0, signal: null });
  expect(readdirSync(daemon.dataDir).filter(isJournalSegmentName)).toEqual([]); // the file alone holds everything
  // These cases walk every character of the previous format; verify-v2.test.ts covers taskhistory/2.
  const text = version1TextOf(daemon.dataFile);
  writeFileSync(daemon.dataFile, text);
  return { text, doc: JSON.parse(text) as DataFile };
}

/** Writes `text` as the data file of a new data dir and returns the file's path. */
function dataFileWith(text: string): string {
  const dir = join(tempDir('taskhistory-verify-'), 'data');
  mkdirSync(dir);
  const file = join(dir, DATA_FILE_NAME);
  writeFileSync(file, text);
  return file;
}

function verifyText(text: string): VerifyReport {
  return verifyDataFileOnDisk(dataFileWith(text));
}

function verdict(report: VerifyReport): { ok: boolean; first_bad_seq: number | null; reason: VerifyReason | null } {
  return { ok: report.ok, first_bad_seq: report.first_bad_seq, reason: report.reason };
}

/** One alphanumeric character of the serialized file and the JSON path it belongs to. */
interface Site {
  offset: number;
  path: (string | number)[];
  /** True for a character of a member's name, false for one of its value. */
  inKey: boolean;
}

/**
 * Every letter and digit of `JSON.stringify(value)` (the daemon writes the file that way, without
 * whitespace), with its offset and path, found by walking the value as the serializer emits it.
 */
function alphanumericSites(value: unknown, offset = 0, path: (string | number)[] = [], out: Site[] = []): Site[] {
  const pushChars = (text: string, at: number, sitePath: (string | number)[], inKey: boolean) => {
    for (let i = 0; i < text.length; i++) if (/[A-Za-z0-9]/.test(text[i])) out.push({ offset: at + i, path: sitePath, inKey });
  };
  if (Array.isArray(value)) {
    let at = offset + 1;
    value.forEach((element, index) => {
      alphanumericSites(element, at, [...path, index], out);
      at += JSON.stringify(element).length + 1;
    });
  } else if (value !== null && typeof value === 'object') {
    let at = offset + 1;
    for (const [key, member] of Object.entries(value)) {
      const keyText = JSON.stringify(key);
      pushChars(keyText, at, [...path, key], true);
      at += keyText.length + 1;
      alphanumericSites(member, at, [...path, key], out);
      at += JSON.stringify(member).length + 1;
    }
  } else {
    pushChars(JSON.stringify(value), offset, path, false);
  }
  return out;
}

/** A different character of the same class: digits never become a leading 0, hex stays hex. */
function changedChar(char: string): string {
  if (/[0-9]/.test(char)) return char === '9' ? '8' : String(Number(char) + 1);
  if (/[a-z]/.test(char)) return char === 'a' ? 'b' : 'a';
  return char === 'A' ? 'B' : 'A';
}

function withCharChanged(text: string, offset: number): string {
  return text.slice(0, offset) + changedChar(text[offset]) + text.slice(offset + 1);
}

/** The record a changed character belongs to, or null when the site is not part of a record or the task view. */
function seqBehind(doc: DataFile, site: Site): number | null {
  const [top, index, key, stepIndex] = site.path;
  if (top === 'chain' && index === 'records') {
    const recordIndex = key as number;
    const member = site.path[3] as string | undefined;
    if (member === undefined) return null;
    if (site.inKey && site.path.length === 4 && HEADER_KEYS.has(member)) return null;
    if (member === 'type' && site.path.length === 4 && !site.inKey) return null;
    return doc.chain.records[recordIndex].seq;
  }
  if (top !== 'tasks' || typeof index !== 'number' || key === undefined) return null;
  const task = doc.tasks[index];
  if (key === 'steps' && typeof stepIndex === 'number') return task.steps[stepIndex].seq;
  if ((key === 'status' || key === 'completed_at' || key === 'completed_seq') && task.status !== 'running') {
    const completion = doc.chain.records.find((r) => r.type === 'task_completed' && r.task_id === task.task_id);
    return completion?.seq ?? null;
  }
  return task.seq;
}

function sitePath(site: Site): string {
  return `${site.path.join('.')}${site.inKey ? ' (key)' : ''}`;
}

describe('verify with the daemon stopped', () => {
  let history: History;

  beforeAll(async () => {
    history = await writeHistory([], async (raw) => {
      const build = await raw.call('create_task', {
        description: 'build and test the project',
        mode: 'step-by-step',
        steps: [{ command: 'make' }, { command: 'make test', retries: 2 }],
        agent: 'verify-test',
      });
      const deploy = await raw.call('create_task', { description: 'deploy to staging', mode: 'autonomous', steps: ['push'] });
      await raw.call('log_step', { task_id: build.task_id, step_num: 1, command: 'make', status: 'success', output: 'compiled fine', started_at: 1700000000.25, duration_ms: 1234.5, exit_code: 0 });
      await raw.call('log_step', { task_id: deploy.task_id, step_num: 1, command: 'git push staging', status: 'success', output: 'pushed' });
      await raw.call('log_step', { task_id: build.task_id, step_num: 2, command: 'make test', status: 'failed', error: 'one test failed', recovery: 'reran it', exit_code: 2 });
      const review = await raw.call('create_task', { description: 'review the diff', mode: 'approve-once', steps: ['read', 'comment'] });
      await raw.call('log_step', { task_id: review.task_id, step_num: 1, command: 'git diff', status: 'success', output: 'three files changed' });
      await raw.call('complete_task', { task_id: review.task_id, final_status: 'completed' });
      await raw.call('complete_task', { task_id: build.task_id, final_status: 'failed' });
      // `deploy` stays running.
    });
  });

  it('verifies the untouched file, and the serialization walk matches the file byte for byte', () => {
    expect(history.text).not.toContain('\\'); // no escapes: every letter or digit can be changed on its own
    expect(JSON.stringify(history.doc)).toBe(history.text);
    expect(verdict(verifyText(history.text))).toEqual({ ok: true, first_bad_seq: null, reason: null });
    expect(verifyText(history.text).checked).toBe(9);
  });

  it('catches a change of any single letter or digit of any stored record or task view entry, naming its seq', () => {
    const sites = alphanumericSites(history.doc).filter((site) => seqBehind(history.doc, site) !== null);
    const coveredRecords = new Set(sites.filter((s) => s.path[0] === 'chain').map((s) => seqBehind(history.doc, s)));
    expect(coveredRecords.size).toBe(history.doc.chain.records.length);
    expect(sites.filter((s) => s.path[0] === 'tasks').length).toBeGreaterThan(300);

    // Misreports grouped by field, so one wrong rule reads as one line, with how many characters hit it.
    const misses = new Map<string, number>();
    for (const site of sites) {
      const want = { ok: false, first_bad_seq: seqBehind(history.doc, site), reason: 'changed content' };
      const got = verdict(verifyText(withCharChanged(history.text, site.offset)));
      if (JSON.stringify(got) === JSON.stringify(want)) continue;
      const line = `${sitePath(site)}: want seq ${want.first_bad_seq} "${want.reason}", got ${JSON.stringify(got)}`;
      misses.set(line, (misses.get(line) ?? 0) + 1);
    }
    const report = [...misses].map(([line, count]) => `${line} (${count} characters)`);
    expect(report, `misreported single-character changes out of ${sites.length}`).toEqual([]);
  });

  it('accepts a large field marked as removed, and catches the same removal without the marker', () => {
    const doc = structuredClone(history.doc);
    const index = doc.chain.records.findIndex((r) => r.type === 'step_logged' && r.output !== undefined);
    const record = doc.chain.records[index] as Extract<DataFile['chain']['records'][number], { type: 'step_logged' }>;
    const length = Buffer.byteLength(record.output as string);
    const step = doc.tasks.flatMap((t) => t.steps).find((s) => s.seq === record.seq);
    delete record.output;
    delete step?.output;
    expect(verdict(verifyText(JSON.stringify(doc)))).toEqual({ ok: false, first_bad_seq: record.seq, reason: 'changed content' });
    record.elided = { output: { state: 'removed', length } };
    expect(verdict(verifyText(JSON.stringify(doc)))).toEqual({ ok: true, first_bad_seq: null, reason: null });
  });

  it('catches every deleted record as a missing record at its seq', () => {
    const misses: string[] = [];
    for (const record of history.doc.chain.records) {
      const doc = structuredClone(history.doc);
      doc.chain.records = doc.chain.records.filter((r) => r.seq !== record.seq);
      const want = { ok: false, first_bad_seq: record.seq, reason: 'missing record' };
      const got = verdict(verifyText(JSON.stringify(doc)));
      if (JSON.stringify(got) !== JSON.stringify(want)) misses.push(`deleted seq ${record.seq}: want ${JSON.stringify(want)}, got ${JSON.stringify(got)}`);
    }
    expect(misses).toEqual([]);
  });

  it('catches every swap of two records as reordered records at the earlier seq', () => {
    const records = history.doc.chain.records;
    const misses: string[] = [];
    for (let i = 0; i < records.length; i++) {
      for (let j = i + 1; j < records.length; j++) {
        const doc = structuredClone(history.doc);
        [doc.chain.records[i], doc.chain.records[j]] = [doc.chain.records[j], doc.chain.records[i]];
        const want = { ok: false, first_bad_seq: records[i].seq, reason: 'reordered records' };
        const got = verdict(verifyText(JSON.stringify(doc)));
        if (JSON.stringify(got) !== JSON.stringify(want)) misses.push(`swapped seq ${records[i].seq} and ${records[j].seq}: got ${JSON.stringify(got)}`);
      }
    }
    expect(misses).toEqual([]);
  });

  it('catches a truncated or empty file as an unreadable file', () => {
    const cuts = [0, 1, Math.floor(history.text.length / 2), history.text.length - 1];
    for (const length of cuts) {
      expect(verdict(verifyText(history.text.slice(0, length))), `file cut to ${length} bytes`).toEqual({ ok: false, first_bad_seq: null, reason: 'unreadable file' });
    }
  });

  it('catches an anchor that is not the genesis point of an untrimmed chain', () => {
    const doc = structuredClone(history.doc);
    doc.chain.anchor.hash = 'f'.repeat(64);
    expect(verdict(verifyText(JSON.stringify(doc)))).toEqual({ ok: false, first_bad_seq: 1, reason: 'bad anchor' });
  });

  describe('the daemon refuses to start on a file that does not verify, and leaves it untouched', () => {
    const recordSite = (seq: number, member: string) =>
      alphanumericSites(history.doc).find((s) => s.path[0] === 'chain' && history.doc.chain.records[s.path[2] as number]?.seq === seq && s.path[3] === member && !s.inKey) as Site;
    const stepSite = (member: string) => alphanumericSites(history.doc).find((s) => s.path[0] === 'tasks' && s.path[2] === 'steps' && s.path[4] === member && !s.inKey) as Site;

    const cases: { name: string; damage: () => string; seq: number | null; reason: VerifyReason }[] = [
      { name: 'a changed description', damage: () => withCharChanged(history.text, recordSite(1, 'description').offset), seq: 1, reason: 'changed content' },
      { name: 'a changed step output', damage: () => withCharChanged(history.text, recordSite(3, 'output').offset + 4), seq: 3, reason: 'changed content' },
      { name: 'a changed hash', damage: () => withCharChanged(history.text, recordSite(5, 'hash').offset + 30), seq: 5, reason: 'changed content' },
      { name: 'a changed command in the task view', damage: () => withCharChanged(history.text, stepSite('command').offset), seq: 3, reason: 'changed content' },
      {
        name: 'a deleted record',
        damage: () => JSON.stringify({ ...history.doc, chain: { ...history.doc.chain, records: history.doc.chain.records.filter((r) => r.seq !== 4) } }),
        seq: 4,
        reason: 'missing record',
      },
      {
        name: 'two reordered records',
        damage: () => {
          const records = [...history.doc.chain.records];
          [records[5], records[6]] = [records[6], records[5]];
          return JSON.stringify({ ...history.doc, chain: { ...history.doc.chain, records } });
        },
        seq: 6,
        reason: 'reordered records',
      },
      { name: 'a truncated file', damage: () => history.text.slice(0, history.text.length - 10), seq: null, reason: 'unreadable file' },
      { name: 'a bad anchor', damage: () => JSON.stringify({ ...history.doc, chain: { ...history.doc.chain, anchor: { seq: 0, hash: 'e'.repeat(64) } } }), seq: 1, reason: 'bad anchor' },
    ];

    for (const { name, damage, seq, reason } of cases) {
      it(`${name}: exit 1 naming ${seq === null ? 'the reason' : `seq ${seq}`} and "${reason}"`, async () => {
        const damaged = damage();
        expect(verdict(verifyText(damaged))).toEqual({ ok: false, first_bad_seq: seq, reason });
        const dataFile = dataFileWith(damaged);
        const dataDir = join(dataFile, '..');
        const daemon = await startDaemon({ dataDir, noWait: true });
        const exit = await daemon.exited;
        expect(exit).toEqual({ code: 1, signal: null });
        const stderr = daemon.stderr();
        expect(stderr).toContain(dataFile);
        if (seq !== null) expect(stderr).toContain(`seq ${seq}`);
        expect(stderr).toContain(reason);
        expect(readFileSync(dataFile, 'utf8')).toBe(damaged);
        expect(readdirSync(dataDir)).toEqual([DATA_FILE_NAME]);
      });
    }
  });
});

describe('verify on a trimmed file (stubs and anchor)', () => {
  let trimmed: History;

  beforeAll(async () => {
    // Five interleaved tasks, max_tasks 2: the three finished ones are trimmed, the two running ones kept.
    trimmed = await writeHistory(['--max-tasks', '2'], async (raw) => {
      const create = async (description: string) => (await raw.call('create_task', { description, mode: 'autonomous', steps: [] })).task_id as string;
      const step = (taskId: string, n: number) => raw.call('log_step', { task_id: taskId, step_num: n, command: `step ${n} of ${taskId}`, status: 'success', output: `out ${n}` });
      const complete = (taskId: string) => raw.call('complete_task', { task_id: taskId, final_status: 'completed' });
      const a = await create('task a');
      const b = await create('task b');
      await step(a, 1);
      await step(b, 1);
      const c = await create('task c');
      await step(c, 1);
      await complete(a);
      await step(b, 2);
      await complete(b);
      const d = await create('task d');
      await step(d, 1);
      await complete(c);
      const e = await create('task e');
      await step(e, 1);
    });
  });

  it('keeps an anchor, stubs and the running tasks, and verifies offline and in a restarted daemon', async () => {
    const { doc, text } = trimmed;
    expect(doc.tasks.map((t) => t.description)).toEqual(['task d', 'task e']);
    expect(doc.chain.anchor.seq).toBeGreaterThan(0);
    expect(doc.chain.stubs.length).toBeGreaterThan(0);
    expect(doc.head.seq).toBe(14);
    expect(verdict(verifyText(text))).toEqual({ ok: true, first_bad_seq: null, reason: null });

    const dataFile = dataFileWith(text);
    const daemon = await startDaemon({ dataDir: join(dataFile, '..'), args: ['--max-tasks', '2'] });
    const raw = await openRawSocket(daemon.socketPath);
    expect(await raw.call('verify', {})).toMatchObject({ ok: true, head: doc.head });
    expect((await raw.call('to_dict', {})).count).toBe(2);
    raw.close();
  });

  it('catches a changed stub hash, naming the stub seq', () => {
    const keptSeqs = new Set(trimmed.doc.chain.records.map((r) => r.seq));
    // A stub's hash is checkable only through the prev_hash of a kept record right after it.
    const checkable = trimmed.doc.chain.stubs.filter(([seq]) => keptSeqs.has(seq + 1));
    expect(checkable.length).toBeGreaterThan(0);
    for (const [seq] of checkable) {
      const doc = structuredClone(trimmed.doc);
      const stub = doc.chain.stubs.find(([s]) => s === seq) as [number, string];
      stub[1] = withCharChanged(stub[1], 10);
      expect(verdict(verifyText(JSON.stringify(doc))), `stub ${seq}`).toEqual({ ok: false, first_bad_seq: seq, reason: 'changed content' });
    }
  });

  it('catches a deleted stub as a missing record', () => {
    const doc = structuredClone(trimmed.doc);
    const [seq] = doc.chain.stubs.splice(0, 1)[0];
    expect(verdict(verifyText(JSON.stringify(doc)))).toEqual({ ok: false, first_bad_seq: seq, reason: 'missing record' });
  });

  it('catches a changed anchor hash as a bad anchor', () => {
    const doc = structuredClone(trimmed.doc);
    doc.chain.anchor.hash = withCharChanged(doc.chain.anchor.hash, 0);
    expect(verdict(verifyText(JSON.stringify(doc)))).toEqual({ ok: false, first_bad_seq: doc.chain.anchor.seq + 1, reason: 'bad anchor' });
  });
});
