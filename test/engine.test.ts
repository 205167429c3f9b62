import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DATA_FILE_FORMAT, DATA_FILE_FORMAT_V1, DATA_FILE_NAME, type DataFileV1 } from '../protocol/data-file.js';
import { chainRecord, GENESIS_HASH, type ChainRecord, type UnchainedRecord } from '../protocol/records.js';
import { tasksFromRecords, type TaskView } from '../protocol/task-view.js';
import { seededRandom } from '../node/seeded-random.js';
import { sha256Hex } from '../node/sha256.js';
import { verifyDataFileOnDisk } from '../node/verify-files.js';
import { readDataFileContent } from './data-file-reading.js';
import { openRawSocket, startDaemon, type Daemon, type RawSocket } from './daemon-harness.js';
import { tempDir, waitFor } from './processes.js';
import { PYTHON_TEST_DIR, lastJsonLine, runPython } from './python/run-python.js';

/**
 * The storage engine on disk: an older taskhistory/1 file is read, rewritten as taskhistory/2 and
 * still verifies (offline, and by the independent Python verifier, and the original model reads it);
 * kill -9 while a checkpoint of a large log is being written loses no acknowledged record.
 */

/** A taskhistory/1 data file as the previous release wrote it: every output in the records and in the tasks. */
function writeVersion1File(dataDir: string): { records: ChainRecord[]; tasks: TaskView[] } {
  const bodies: UnchainedRecord[] = [
    { type: 'task_created', ts: 1_700_000_000.5, task_id: 'task_1700000000_aaaaaa', description: 'rotate logs', mode: 'autonomous', plan: ['gzip', { cmd: 'upload' }], machine_id: 'm1' },
    { type: 'step_logged', ts: 1_700_000_001, task_id: 'task_1700000000_aaaaaa', step: 1, command: 'gzip app.log', status: 'success', output: 'compressed ✓ four files' },
    { type: 'task_created', ts: 1_700_000_002, task_id: 'task_1700000002_bbbbbb', description: 'renew cert', mode: 'approve-once', plan: [], machine_id: 'm1', agent: 'certbot' },
    { type: 'step_logged', ts: 1_700_000_003, task_id: 'task_1700000002_bbbbbb', step: 1, command: 'certbot renew', status: 'failed', error: 'rate limited', recovery: 'waited', exit_code: 1 },
    { type: 'step_logged', ts: 1_700_000_004, task_id: 'task_1700000000_aaaaaa', step: 2, command: 'aws s3 cp', status: 'success', output: 'uploaded\n"quoted"', duration_ms: 12.5 },
    { type: 'task_completed', ts: 1_700_000_005, task_id: 'task_1700000000_aaaaaa', final_status: 'completed' },
  ];
  const records: ChainRecord[] = [];
  for (const body of bodies) {
    const previous = records.at(-1);
    records.push(chainRecord(body, previous?.seq ?? 0, previous?.hash ?? GENESIS_HASH, sha256Hex));
  }
  const tasks = [...tasksFromRecords(records).values()];
  const head = { seq: records.length, hash: (records.at(-1) as ChainRecord).hash };
  const doc: DataFileV1 = { tasks, count: tasks.length, max_tasks: 100, format: DATA_FILE_FORMAT_V1, machine_id: 'm1', head, chain: { anchor: { seq: 0, hash: GENESIS_HASH }, stubs: [], records } };
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  writeFileSync(join(dataDir, DATA_FILE_NAME), JSON.stringify(doc), { mode: 0o600 });
  return { records, tasks };
}

async function pythonVerifies(dataFile: string): Promise<unknown> {
  const run = await runPython([join(PYTHON_TEST_DIR, 'verify_chain.py'), dataFile], []);
  return lastJsonLine(run);
}

describe('a taskhistory/1 data file', () => {
  it('is read, rewritten as taskhistory/2 at start, and verifies before and after, offline and in Python', async () => {
    const dataDir = join(tempDir('taskhistory-v1-'), 'data');
    const dataFile = join(dataDir, DATA_FILE_NAME);
    const { records, tasks } = writeVersion1File(dataDir);
    expect(verifyDataFileOnDisk(dataFile)).toMatchObject({ ok: true, head: { seq: records.length } });
    expect(await pythonVerifies(dataFile)).toMatchObject({ ok: true, first_bad_seq: null });

    const daemon = await startDaemon({ dataDir, args: ['--machine-id', 'm1'] });
    expect(JSON.parse(readFileSync(dataFile, 'utf8')).format).toBe(DATA_FILE_FORMAT);
    const raw = await openRawSocket(daemon.socketPath);
    expect(await raw.call('to_dict', {})).toEqual({ tasks, count: 2, max_tasks: 100 });
    expect(await raw.call('verify', {})).toMatchObject({ ok: true, head: { seq: records.length } });
    const { seq } = await raw.call('log_step', { task_id: 'task_1700000002_bbbbbb', step_num: 2, command: 'certbot renew', status: 'success', output: 'renewed' });
    expect(seq).toBe(records.length + 1);
    raw.close();
    expect((await daemon.stop('SIGTERM')).code).toBe(0);

    const content = readDataFileContent(dataFile);
    expect(content.records.slice(0, records.length)).toEqual(records);
    expect(verifyDataFileOnDisk(dataFile)).toMatchObject({ ok: true, head: { seq: records.length + 1 } });
    expect(await pythonVerifies(dataFile)).toMatchObject({ ok: true, head_seq: records.length + 1 });

    const run = await runPython([join(PYTHON_TEST_DIR, 'load_with_original.py'), dataFile], [PYTHON_TEST_DIR]);
    expect(run.code, run.stderr).toBe(0);
    const loaded = lastJsonLine(run).tasks as { task_id: string; steps: unknown[][] }[];
    expect(loaded[0].steps).toEqual([
      [1, 'gzip app.log', 'success', 'compressed ✓ four files', null],
      [2, 'aws s3 cp', 'success', 'uploaded\n"quoted"', null],
    ]);
    expect(loaded[1].steps).toEqual([
      [1, 'certbot renew', 'failed', null, 'rate limited'],
      [2, 'certbot renew', 'success', 'renewed', null],
    ]);
  });
});

/** What a writer was told was stored. */
interface Ack {
  seq: number;
  taskId: string;
  step: number;
  output: string;
}

const WRITERS = 4;
const OUTPUT_BYTES = 16 * 1024;
const ROUNDS = 3;
/** The log must be at least this large before a round's kill: a checkpoint then copies megabytes. */
const LARGE_LOG_BYTES = 8 * 1024 * 1024;

/** A writer logging big steps into its own running task until its connection dies. */
async function writeUntilKilled(raw: RawSocket, name: string, acks: Ack[], random: () => number): Promise<void> {
  try {
    const { task_id: taskId } = await raw.call('create_task', { description: `${name} fills the log`, mode: 'autonomous', steps: [] });
    for (let step = 1; ; step++) {
      const output = `${name}.${step} `.padEnd(OUTPUT_BYTES - 64, String.fromCharCode(97 + Math.floor(random() * 26)));
      const { seq } = await raw.call('log_step', { task_id: taskId, step_num: step, command: `fill ${step}`, status: 'success', output });
      acks.push({ seq, taskId, step, output });
    }
  } catch {
    // the daemon was killed
  }
}

const checkpointTemps = (dataDir: string) => readdirSync(dataDir).filter((name) => name.startsWith(`.${DATA_FILE_NAME}.`) && name.endsWith('.tmp'));
/** Bytes in the data dir; a file the daemon deletes meanwhile counts nothing. */
const dataDirBytes = (dataDir: string) => readdirSync(dataDir).reduce((sum, name) => sum + (statSync(join(dataDir, name), { throwIfNoEntry: false })?.size ?? 0), 0);

describe('kill -9 while a checkpoint of a large log is written', () => {
  it(`loses no acknowledged record over ${ROUNDS} rounds`, async () => {
    const random = seededRandom(20261201);
    const dataDir = join(tempDir('taskhistory-engine-crash-'), 'data');
    const socketPath = join(tempDir('taskhistory-engine-run-'), 'taskhistoryd.sock');
    // Checkpoints as often as the growth rule allows, never on idle: each round's kill lands in one.
    const args = ['--checkpoint-journal-bytes', String(1024 * 1024), '--checkpoint-idle-ms', '600000', '--max-tasks', '1000'];
    const acks: Ack[] = [];
    let daemon: Daemon = await startDaemon({ dataDir, socketPath, args });
    for (let round = 1; round <= ROUNDS; round++) {
      const sockets = await Promise.all(Array.from({ length: WRITERS }, () => openRawSocket(socketPath)));
      const writers = sockets.map((raw, i) => writeUntilKilled(raw, `r${round}w${i}`, acks, random));
      await waitFor(() => dataDirBytes(dataDir) > round * LARGE_LOG_BYTES && checkpointTemps(dataDir).length > 0, 120_000, `round ${round}: a checkpoint of a log over ${round * 8} MiB in progress`);
      expect(await daemon.stop('SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });
      await Promise.all(writers);

      daemon = await startDaemon({ dataDir, socketPath, args });
      const check = await openRawSocket(socketPath);
      const status = await check.call('status', {});
      expect(status.last_seq, `round ${round}: every acknowledged seq is back`).toBeGreaterThanOrEqual(Math.max(...acks.map((ack) => ack.seq)));
      const missing: string[] = [];
      const byTask = new Map<string, Ack[]>();
      for (const ack of acks) byTask.set(ack.taskId, [...(byTask.get(ack.taskId) ?? []), ack]);
      for (const [taskId, taskAcks] of byTask) {
        const task = (await check.call('get_task', { task_id: taskId })) as TaskView;
        const stored = new Map(task.steps.map((step) => [step.seq, step]));
        for (const ack of taskAcks) {
          const step = stored.get(ack.seq);
          if (!step || step.step !== ack.step || step.output !== ack.output) missing.push(`seq ${ack.seq} of ${taskId}`);
        }
      }
      expect(missing, `round ${round}: acknowledged steps not stored exactly`).toEqual([]);
      await waitFor(async () => (await check.call('status', {})).storage_error === null, 10_000, 'no storage error');
      expect(await check.call('verify', {}), `round ${round}: verify after the restart`).toMatchObject({ ok: true, first_bad_seq: null });
      check.close();
    }
    expect((await daemon.stop('SIGTERM')).code).toBe(0);
    expect(checkpointTemps(dataDir)).toEqual([]);
    expect(verifyDataFileOnDisk(join(dataDir, DATA_FILE_NAME))).toMatchObject({ ok: true });
  }, 300_000);
});

describe('checkpoints while the journal grows', () => {
  it('are written once per crossing of the growth bound, not once per commit while one is written', async () => {
    const bound = 1024 * 1024;
    const daemon = await startDaemon({ args: ['--checkpoint-journal-bytes', String(bound), '--checkpoint-idle-ms', '600000', '--log-level', 'debug'] });
    const sockets = await Promise.all(Array.from({ length: WRITERS }, () => openRawSocket(daemon.socketPath)));
    const journalled = 12 * bound;
    await Promise.all(
      sockets.map(async (raw, i) => {
        const { task_id: taskId } = await raw.call('create_task', { description: `writer ${i}`, mode: 'autonomous', steps: [] });
        for (let step = 1; step <= journalled / OUTPUT_BYTES / WRITERS; step++) {
          await raw.call('log_step', { task_id: taskId, step_num: step, command: 'fill', status: 'success', output: `${i}.${step} `.padEnd(OUTPUT_BYTES, 'x') });
        }
        raw.close();
      }),
    );
    expect((await daemon.stop('SIGTERM')).code).toBe(0);
    const journalBytes = daemon
      .stderr()
      .split('\n')
      .filter((line) => line.includes('wrote the data file'))
      .map((line) => Number(/ journal_bytes=(\d+)/.exec(line)?.[1]));
    // The first file at start, then only checkpoints the bound asked for (none queued behind one), the last at stop.
    const grown = journalBytes.slice(1, -1);
    expect(grown.length).toBeGreaterThanOrEqual(2);
    expect(grown.filter((bytes) => bytes < bound)).toEqual([]);
    expect(journalBytes.length).toBeLessThanOrEqual(2 + journalled / bound);
    expect(verifyDataFileOnDisk(daemon.dataFile)).toMatchObject({ ok: true });
  }, 120_000);
});

describe('a stop whose last checkpoint runs out of time', () => {
  it('exits cleanly with the journal holding what the file lacks, and the next start replays it', async () => {
    const args = ['--checkpoint-idle-ms', '600000', '--stop-checkpoint-ms', '0'];
    const daemon = await startDaemon({ args });
    const raw = await openRawSocket(daemon.socketPath);
    const { task_id: taskId } = await raw.call('create_task', { description: 'outlives a hurried stop', mode: 'autonomous', steps: [] });
    const outputs = Array.from({ length: 20 }, (_, i) => `step ${i + 1} `.padEnd(2000, 'y'));
    for (const [i, output] of outputs.entries()) await raw.call('log_step', { task_id: taskId, step_num: i + 1, command: `s${i + 1}`, status: 'success', output });
    const { last_seq: lastSeq } = await raw.call('status', {});
    raw.close();
    expect((await daemon.stop('SIGTERM')).code).toBe(0);
    expect(daemon.stderr()).toContain('left the checkpoint unwritten to stop in time');
    expect(checkpointTemps(daemon.dataDir)).toEqual([]);
    expect(readDataFileContent(daemon.dataFile).head.seq).toBeLessThan(lastSeq);

    const again = await startDaemon({ dataDir: daemon.dataDir, socketPath: daemon.socketPath, args: ['--checkpoint-idle-ms', '600000'] });
    const check = await openRawSocket(again.socketPath);
    expect((await check.call('status', {})).last_seq).toBe(lastSeq);
    const task = (await check.call('get_task', { task_id: taskId })) as TaskView;
    expect(task.steps.map((step) => step.output)).toEqual(outputs);
    expect(await check.call('verify', {})).toMatchObject({ ok: true });
    check.close();
    expect((await again.stop('SIGTERM')).code).toBe(0);
    expect(readDataFileContent(again.dataFile).head.seq).toBe(lastSeq);
  }, 60_000);
});

describe('a step view line larger than a checkpoint write', () => {
  it('is copied whole from one data file to the next', async () => {
    const args = ['--checkpoint-idle-ms', '100'];
    const daemon = await startDaemon({ args });
    const raw = await openRawSocket(daemon.socketPath);
    const { task_id: taskId } = await raw.call('create_task', { description: 'escapes to six bytes a character', mode: 'autonomous', steps: [] });
    // 60,000 control characters: a 360 KB line as JSON, over the writer's 256 KiB chunk.
    const outputs = ['\u0001'.repeat(60_000), 'small', 'after'];
    for (const [i, output] of outputs.entries()) await raw.call('log_step', { task_id: taskId, step_num: i + 1, command: `s${i + 1}`, status: 'success', output });
    raw.close();
    expect((await daemon.stop('SIGTERM')).code).toBe(0);

    // The next checkpoint copies the stored view lines of the first file.
    const again = await startDaemon({ dataDir: daemon.dataDir, socketPath: daemon.socketPath, args });
    const check = await openRawSocket(again.socketPath);
    await check.call('log_step', { task_id: taskId, step_num: 4, command: 's4', status: 'success', output: 'last' });
    await waitFor(() => readDataFileContent(again.dataFile).head.seq === 5, 10_000, 'the checkpoint after the fourth step');
    const task = (await check.call('get_task', { task_id: taskId })) as TaskView;
    expect(task.steps.map((step) => step.output)).toEqual([...outputs, 'last']);
    check.close();
    expect((await again.stop('SIGTERM')).code).toBe(0);
    expect(verifyDataFileOnDisk(again.dataFile)).toMatchObject({ ok: true });
  }, 60_000);
});
