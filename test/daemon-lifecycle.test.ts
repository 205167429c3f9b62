import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { isJournalSegmentName, type DataFile } from '../protocol/data-file.js';
import { ErrorCodes } from '../protocol/errors.js';
import { verifyDataFileOnDisk } from '../node/verify-files.js';
import { openRawSocket, socketAnswers, startDaemon, type RawSocket } from './daemon-harness.js';
import { tempDir, waitFor } from './processes.js';

/** Start and stop: stale and live sockets, permissions, damaged data files, SIGTERM under load. */

const modeOf = (path: string) => statSync(path).mode & 0o777;

/** A group from /etc/group other than root's, to hand the socket to. */
function someGroup(): { name: string; gid: number } {
  const entry = readFileSync('/etc/group', 'utf8')
    .split('\n')
    .map((line) => line.split(':'))
    .find((fields) => fields.length >= 3 && Number(fields[2]) > 0);
  if (!entry) throw new Error('/etc/group lists no group but root');
  return { name: entry[0], gid: Number(entry[2]) };
}

describe('sockets', () => {
  it('a socket left by a killed daemon is removed and served again; acknowledged records survive the kill', async () => {
    const first = await startDaemon();
    const rpc = await openRawSocket(first.socketPath);
    const { task_id } = await rpc.call('create_task', { description: 'before the kill', mode: 'autonomous', steps: [] });
    const step = await rpc.call('log_step', { task_id, step_num: 1, command: 'ls', status: 'success', output: 'acknowledged' });
    expect(await first.stop('SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });
    expect(lstatSync(first.socketPath).isSocket()).toBe(true);
    expect(await socketAnswers(first.socketPath)).toBe(false);

    const second = await startDaemon({ socketPath: first.socketPath, dataDir: first.dataDir });
    expect(second.stderr()).toContain(`removed a stale socket left by a daemon that did not shut down socket=${first.socketPath}`);
    const rpc2 = await openRawSocket(second.socketPath);
    const task = await rpc2.call('get_task', { task_id });
    expect(task.steps).toMatchObject([{ step: 1, output: 'acknowledged', seq: step.seq }]);
    rpc2.close();
    expect(await second.stop()).toEqual({ code: 0, signal: null });
  });

  it('a second daemon on a live socket exits 1 naming the socket; the first keeps serving', async () => {
    const first = await startDaemon();
    const second = await startDaemon({ socketPath: first.socketPath, noWait: true });
    expect(await second.exited).toEqual({ code: 1, signal: null });
    expect(second.stderr()).toContain(`another taskhistoryd is already serving on ${first.socketPath}`);
    expect(lstatSync(first.socketPath).isSocket()).toBe(true);
    const rpc = await openRawSocket(first.socketPath);
    expect((await rpc.call('status')).pid).toBe(first.pid);
    rpc.close();
    expect(await first.stop()).toEqual({ code: 0, signal: null });
    expect(existsSync(first.socketPath)).toBe(false);
  });

  it('a second daemon on a live socket and the same data dir exits 1 without touching the data', async () => {
    const first = await startDaemon({ args: ['--checkpoint-idle-ms', '600000'] });
    const rpc = await openRawSocket(first.socketPath);
    const { task_id } = await rpc.call('create_task', { description: 'in the journal only', mode: 'autonomous', steps: [] });
    const filesBefore = readdirSync(first.dataDir).sort();
    const contentsBefore = filesBefore.map((name) => readFileSync(join(first.dataDir, name)));

    const second = await startDaemon({ socketPath: first.socketPath, dataDir: first.dataDir, noWait: true });
    expect(await second.exited).toEqual({ code: 1, signal: null });
    expect(second.stderr()).toContain(`another taskhistoryd is already serving on ${first.socketPath}`);
    expect(readdirSync(first.dataDir).sort()).toEqual(filesBefore);
    filesBefore.forEach((name, i) => expect(readFileSync(join(first.dataDir, name)).equals(contentsBefore[i])).toBe(true));

    // The first daemon's journal still takes acknowledged records: they survive its crash.
    const step = await rpc.call('log_step', { task_id, step_num: 1, command: 'ls', status: 'success' });
    expect((await rpc.call('status')).tamper.count).toBe(0);
    rpc.close();
    await first.stop('SIGKILL');
    const third = await startDaemon({ dataDir: first.dataDir });
    const rpc3 = await openRawSocket(third.socketPath);
    expect((await rpc3.call('get_task', { task_id })).steps.map((s: { seq: number }) => s.seq)).toEqual([step.seq]);
    rpc3.close();
    await third.stop();
  });

  it('a second daemon on another socket but the same data dir refuses to start, naming the data dir', async () => {
    const first = await startDaemon({ args: ['--checkpoint-idle-ms', '600000'] });
    const rpc = await openRawSocket(first.socketPath);
    await rpc.call('create_task', { description: 'owned by the first daemon', mode: 'autonomous', steps: [] });
    const filesBefore = readdirSync(first.dataDir).sort();

    const second = await startDaemon({ dataDir: first.dataDir, noWait: true });
    const outcome = await Promise.race([second.exited, waitFor(() => socketAnswers(second.socketPath), 15_000, 'the second daemon').then(() => 'serving')]);
    expect(outcome).toEqual({ code: 1, signal: null });
    expect(second.stderr()).toContain(first.dataDir);
    expect(readdirSync(first.dataDir).sort()).toEqual(filesBefore);
    expect((await rpc.call('status')).tamper.count).toBe(0);
    rpc.close();
    await first.stop();
  });

  it('owner only by default: socket 0600, its directory 0700, data dir 0700, data files 0600', async () => {
    const daemon = await startDaemon();
    const rpc = await openRawSocket(daemon.socketPath);
    await rpc.call('create_task', { description: 'files', mode: 'autonomous', steps: [] });
    expect(modeOf(daemon.socketPath)).toBe(0o600);
    expect(modeOf(dirname(daemon.socketPath))).toBe(0o700);
    expect(modeOf(daemon.dataDir)).toBe(0o700);
    const segments = readdirSync(daemon.dataDir).filter(isJournalSegmentName);
    expect(segments.length).toBeGreaterThan(0);
    for (const segment of segments) expect(modeOf(join(daemon.dataDir, segment))).toBe(0o600);
    rpc.close();
    await daemon.stop();
    expect(modeOf(daemon.dataFile)).toBe(0o600);
  });

  it('--socket-group: socket 0660 and directory 0750, both owned by the group', async () => {
    const group = someGroup();
    const daemon = await startDaemon({ args: ['--socket-group', group.name] });
    const socket = statSync(daemon.socketPath);
    const dir = statSync(dirname(daemon.socketPath));
    expect([socket.mode & 0o777, socket.gid]).toEqual([0o660, group.gid]);
    expect([dir.mode & 0o777, dir.gid]).toEqual([0o750, group.gid]);
    const rpc = await openRawSocket(daemon.socketPath);
    expect((await rpc.call('status')).socket).toBe(daemon.socketPath);
    rpc.close();
    expect(await daemon.stop()).toEqual({ code: 0, signal: null });
  });

  it('--socket-group naming no group exits 1 saying so', async () => {
    const daemon = await startDaemon({ args: ['--socket-group', 'no-such-group-th'], noWait: true });
    expect(await daemon.exited).toEqual({ code: 1, signal: null });
    expect(daemon.stderr()).toContain('socket group "no-such-group-th" does not exist (getent group no-such-group-th finds nothing)');
    expect(existsSync(daemon.socketPath)).toBe(false);
  });
});

describe('a damaged data file', () => {
  let goodText: string;

  beforeAll(async () => {
    const daemon = await startDaemon();
    const rpc = await openRawSocket(daemon.socketPath);
    const { task_id } = await rpc.call('create_task', { description: 'to be damaged', mode: 'autonomous', steps: ['a', 'b'] });
    await rpc.call('log_step', { task_id, step_num: 1, command: 'a', status: 'success', output: 'fine' });
    await rpc.call('complete_task', { task_id, final_status: 'completed' });
    rpc.close();
    await daemon.stop();
    goodText = readFileSync(daemon.dataFile, 'utf8');
  });

  const withTasks = (tasks: unknown) => JSON.stringify({ ...JSON.parse(goodText), tasks });
  const withEditedDescription = () => {
    const doc = JSON.parse(goodText) as DataFile;
    doc.tasks[0].description = 'rewritten later';
    return JSON.stringify(doc);
  };

  it.each([
    ['empty', () => '', 'is damaged: the file is empty'],
    ['truncated', () => goodText.slice(0, Math.floor(goodText.length / 2)), 'is damaged: not valid JSON'],
    ['not JSON', () => 'tasks: none\n', 'is damaged: not valid JSON'],
    ['a JSON array', () => '[]', 'is damaged: the top level is not an object'],
    ['another format', () => '{"tasks": [], "max_tasks": 100}', 'is damaged: "format" is neither "taskhistory/2" nor "taskhistory/1"'],
    ['tasks not a list', () => withTasks({}), 'is damaged: "tasks" is not an array'],
    ['edited content', withEditedDescription, 'does not verify at seq 1: changed content'],
  ])('%s: refuses to start, names the file and the problem, leaves it byte-identical', async (_what, content, problem) => {
    const dataDir = join(tempDir(), 'data');
    mkdirSync(dataDir, { mode: 0o700 });
    const dataFile = join(dataDir, 'task_history.json');
    const bytes = Buffer.from(content(), 'utf8');
    writeFileSync(dataFile, bytes);

    const daemon = await startDaemon({ dataDir, noWait: true });
    expect(await daemon.exited).toEqual({ code: 1, signal: null });
    expect(daemon.stderr()).toContain(`${dataFile} ${problem}`);
    expect(daemon.stderr()).toContain('The file was left untouched');
    expect(readFileSync(dataFile).equals(bytes)).toBe(true);
    expect(readdirSync(dataDir)).toEqual(['task_history.json']);
    expect(existsSync(daemon.socketPath)).toBe(false);
  });
});

interface BurstLog {
  taskId: string;
  /** Step number -> seq, for every step the daemon acknowledged. */
  acked: Map<number, number>;
  /** Every answer in order: 'ok' or the error code. */
  answers: ('ok' | number)[];
}

/** Logs steps one after another as fast as answers come, until the daemon closes the connection. */
async function logStepsUntilClosed(rpc: RawSocket, log: BurstLog): Promise<void> {
  const closed = new Promise<null>((resolve) => rpc.ws.once('close', () => resolve(null)));
  for (let step = 1; rpc.closed === null; step++) {
    const request = rpc.request('log_step', { task_id: log.taskId, step_num: step, command: `step ${step}`, status: 'success', output: `output ${step}` });
    request.catch(() => undefined); // after a close it times out; the close ends the loop first
    const response = await Promise.race([request, closed]);
    if (response === null) return;
    if (response.error) {
      log.answers.push(response.error.code);
    } else {
      log.answers.push('ok');
      log.acked.set(step, response.result.seq);
    }
  }
}

describe('SIGTERM', () => {
  it('as soon as the socket file appears: a clean stop, exit 0, socket removed', async () => {
    const daemon = await startDaemon({ noWait: true });
    let exited = false;
    void daemon.exited.then(() => (exited = true));
    while (!existsSync(daemon.socketPath) && !exited) await new Promise((resolve) => setImmediate(resolve));
    expect(await daemon.stop()).toEqual({ code: 0, signal: null });
    expect(existsSync(daemon.socketPath)).toBe(false);
  });

  it('during a burst from several clients: every acknowledged step is in the file, later requests refused, exit 0, socket removed', async () => {
    const daemon = await startDaemon();
    const clients = await Promise.all(Array.from({ length: 6 }, () => openRawSocket(daemon.socketPath)));
    const logs: BurstLog[] = await Promise.all(
      clients.map(async (rpc, i) => ({ taskId: (await rpc.call('create_task', { description: `burst ${i}`, mode: 'autonomous', steps: [] })).task_id, acked: new Map(), answers: [] })),
    );
    const bursts = Promise.all(clients.map((rpc, i) => logStepsUntilClosed(rpc, logs[i])));

    // Signal while every client has a request in flight.
    await waitFor(() => logs.every((log) => log.acked.size >= 50), 20_000, '50 acknowledged steps per client');
    const exited = daemon.stop('SIGTERM');
    await bursts;
    expect(await exited).toEqual({ code: 0, signal: null });
    expect(existsSync(daemon.socketPath)).toBe(false);

    for (const log of logs) {
      // Answers are acknowledgements, then (once the daemon stops) only ShuttingDown refusals.
      const firstRefusal = log.answers.indexOf(ErrorCodes.ShuttingDown);
      const afterSignal = firstRefusal === -1 ? [] : log.answers.slice(firstRefusal);
      expect(afterSignal.every((answer) => answer === ErrorCodes.ShuttingDown)).toBe(true);
      expect(log.answers.filter((answer) => answer !== 'ok' && answer !== ErrorCodes.ShuttingDown)).toEqual([]);
    }

    const file = JSON.parse(readFileSync(daemon.dataFile, 'utf8')) as DataFile;
    const recordSeqs = new Map(file.chain.records.map((record) => [record.seq, record]));
    for (const log of logs) {
      const task = file.tasks.find((t) => t.task_id === log.taskId);
      expect(task).toBeDefined();
      const stored = new Map(task!.steps.map((step) => [step.step, step.seq]));
      for (const [step, seq] of log.acked) {
        expect(stored.get(step)).toBe(seq);
        expect(recordSeqs.get(seq)).toMatchObject({ type: 'step_logged', task_id: log.taskId, step, output: `output ${step}` });
      }
      // Steps were sent one at a time: the file holds steps 1..n with nothing missing.
      expect(task!.steps.map((step) => step.step)).toEqual(Array.from({ length: task!.steps.length }, (_, i) => i + 1));
    }
    expect(verifyDataFileOnDisk(daemon.dataFile)).toMatchObject({ ok: true, head: file.head });
    expect(daemon.stderr()).toContain(`stopped last_seq=${file.head.seq}`);
  });
});
