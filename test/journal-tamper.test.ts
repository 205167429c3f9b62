import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { journalSegmentName, sortedJournalSegments } from '../protocol/data-file.js';
import type { StatusResult } from '../protocol/methods.js';
import type { TamperDetectedRecord } from '../protocol/records.js';
import { verifyDataFileOnDisk } from '../node/verify-files.js';
import { openRawSocket, startDaemon, type Daemon, type RawSocket } from './daemon-harness.js';
import { spawnTracked, tempDir, waitFor } from './processes.js';

/**
 * The journal segments are data the daemon watches as it watches the data file: a segment deleted
 * or changed under a running daemon is recorded as tamper_detected and every record is written
 * again from memory, so a kill -9 afterwards loses nothing acknowledged. At start-up the durable
 * head file refuses files that lost records, stray temp files go, and symbolic links are refused.
 */

/** No checkpoint of its own accord: every record stays in the journal until something forces one. */
const JOURNAL_ONLY = ['--checkpoint-idle-ms', '600000'];

async function runForeign(command: string, args: string[]): Promise<void> {
  const child = spawnTracked(command, args);
  expect(await child.exited, `${command} ${args.join(' ')}: ${child.stderr()}`).toEqual({ code: 0, signal: null });
}

const status = (raw: RawSocket): Promise<StatusResult> => raw.call('status', {});
const segmentsIn = (dataDir: string) => sortedJournalSegments(readdirSync(dataDir));

/** A task with `steps` acknowledged steps; returns its id and every acknowledged seq. */
async function taskWithSteps(raw: RawSocket, steps: number): Promise<{ taskId: string; seqs: number[] }> {
  const created = await raw.call('create_task', { description: 'migrate the database', mode: 'autonomous', steps: ['dump', 'load'] });
  const seqs = [created.seq];
  for (let step = 1; step <= steps; step++) {
    seqs.push((await raw.call('log_step', { task_id: created.task_id, step_num: step, command: `psql -f part${step}.sql`, status: 'success', output: `part ${step} loaded` })).seq);
  }
  return { taskId: created.task_id, seqs };
}

/** Kills the daemon with SIGKILL, starts a new one on its data dir and checks every listed step is there and the files verify. */
async function restartAfterKill(daemon: Daemon, taskId: string, stepCount: number): Promise<void> {
  expect(await daemon.stop('SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });
  const again = await startDaemon({ dataDir: daemon.dataDir, args: JOURNAL_ONLY });
  const raw = await openRawSocket(again.socketPath);
  const task = await raw.call('get_task', { task_id: taskId });
  expect(task.steps.map((step: { step: number }) => step.step)).toEqual(Array.from({ length: stepCount }, (_, i) => i + 1));
  expect(await raw.call('verify', {})).toMatchObject({ ok: true });
  expect(verifyDataFileOnDisk(again.dataFile)).toMatchObject({ ok: true });
  raw.close();
  expect(await again.stop()).toEqual({ code: 0, signal: null });
}

describe('journal segments changed under a running daemon', () => {
  it('a deleted segment is recorded, every record is written again, and a kill -9 then loses nothing acknowledged', async () => {
    const daemon = await startDaemon({ args: JOURNAL_ONLY });
    const raw = await openRawSocket(daemon.socketPath);
    const { taskId, seqs } = await taskWithSteps(raw, 20);
    const [segment] = segmentsIn(daemon.dataDir);
    expect((await status(raw)).checkpoint_seq).toBeLessThan(seqs.at(-1) as number);

    await runForeign('rm', [join(daemon.dataDir, segment)]);
    const noticed = await waitFor(async () => {
      const now = await status(raw);
      return now.tamper.count === 1 && now.checkpoint_seq === now.last_seq ? now : null;
    }, 10_000, 'the daemon to notice the deleted segment and checkpoint');
    expect(noticed.tamper.last?.reason).toBe(`journal segment ${segment} deleted`);

    // Acknowledged after the damage: these go to a new segment.
    for (let step = 21; step <= 25; step++) await raw.call('log_step', { task_id: taskId, step_num: step, command: 'vacuum', status: 'success' });
    expect(segmentsIn(daemon.dataDir)).not.toContain(segment);
    raw.close();
    await restartAfterKill(daemon, taskId, 25);
  });

  it('a segment changed in place is moved aside as evidence, recorded, and the history survives a kill -9', async () => {
    const daemon = await startDaemon({ args: JOURNAL_ONLY });
    const raw = await openRawSocket(daemon.socketPath);
    const tail = await openRawSocket(daemon.socketPath);
    await tail.call('subscribe', {});
    const { taskId } = await taskWithSteps(raw, 5);
    const [segment] = segmentsIn(daemon.dataDir);
    const path = join(daemon.dataDir, segment);
    const text = readFileSync(path, 'utf8');
    const at = text.indexOf('part 3 loaded');
    expect(at).toBeGreaterThan(-1);

    // Another process overwrites one byte without changing the file's size or inode.
    await runForeign('python3', ['-c', `import os\nfd = os.open(${JSON.stringify(path)}, os.O_WRONLY)\nos.pwrite(fd, b'X', ${Buffer.byteLength(text.slice(0, at))})\nos.close(fd)`]);
    let event: { method: string; params: { type: string; record: TamperDetectedRecord } };
    do event = await tail.next(10_000);
    while (event.method !== 'event' || event.params.type !== 'tamper_detected');
    const found = event.params.record;
    expect(found).toMatchObject({ reason: `journal segment ${segment} changed`, data_file: path, first_bad_seq: 1 });
    expect(found.evidence_file).toMatch(new RegExp(`^${path}\\.tampered-`));
    expect(readFileSync(found.evidence_file as string, 'utf8')).toContain('"output":"Xart 3 loaded"');
    await waitFor(async () => {
      const now = await status(raw);
      return now.checkpoint_seq === now.last_seq;
    }, 10_000, 'the checkpoint after the damage');

    await raw.call('log_step', { task_id: taskId, step_num: 6, command: 'analyze', status: 'success' });
    tail.close();
    raw.close();
    await restartAfterKill(daemon, taskId, 6);
  });
});

describe('start-up checks of the data dir', () => {
  it('refuses to start on files that lost records the durable head file says were acknowledged', async () => {
    const daemon = await startDaemon({ args: JOURNAL_ONLY });
    const raw = await openRawSocket(daemon.socketPath);
    const { seqs } = await taskWithSteps(raw, 300);
    const headFile = join(daemon.dataDir, 'durable_head.json');
    // The head file trails the journal by a bounded number of records; wait until it covers some.
    const durable = await waitFor(() => (existsSync(headFile) ? (JSON.parse(readFileSync(headFile, 'utf8')) as { seq: number }) : null), 10_000, 'the head file');
    expect(durable.seq).toBeGreaterThan(1);
    expect(durable.seq).toBeLessThanOrEqual(seqs.at(-1) as number);
    raw.close();
    expect(await daemon.stop('SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });

    // While no daemon runs, the journal goes: the data file alone holds a valid, shorter chain.
    for (const segment of segmentsIn(daemon.dataDir)) unlinkSync(join(daemon.dataDir, segment));
    const filesBefore = readdirSync(daemon.dataDir).sort();
    const refused = await startDaemon({ dataDir: daemon.dataDir, args: JOURNAL_ONLY, noWait: true });
    expect(await refused.exited).toEqual({ code: 1, signal: null });
    const message = refused.stderr();
    expect(message).toContain(`the data dir ${daemon.dataDir} has lost records: ${headFile} says seq ${durable.seq} was durable, but its files hold records only up to seq 0`);
    expect(message).toContain('restore from the cloud');
    expect(message).toContain(`delete ${headFile}`);
    expect(readdirSync(daemon.dataDir).sort()).toEqual(filesBefore.filter((name) => name !== 'taskhistoryd.lock'));

    // Accepting the loss, as the message says, starts again.
    unlinkSync(headFile);
    const accepted = await startDaemon({ dataDir: daemon.dataDir, args: JOURNAL_ONLY });
    expect(await accepted.stop()).toEqual({ code: 0, signal: null });
  });

  it('refuses an older copy of the data file put back over a newer history', async () => {
    const daemon = await startDaemon({ args: ['--checkpoint-idle-ms', '100'] });
    const raw = await openRawSocket(daemon.socketPath);
    await taskWithSteps(raw, 2);
    const checkpointed = async () => {
      const now = await status(raw);
      return now.checkpoint_seq === now.last_seq ? now : null;
    };
    const old = await waitFor(checkpointed, 10_000, 'a checkpoint');
    const copy = join(tempDir('taskhistory-old-copy-'), 'task_history.json');
    copyFileSync(daemon.dataFile, copy);
    await taskWithSteps(raw, 2);
    raw.close();
    expect(await daemon.stop()).toEqual({ code: 0, signal: null });
    copyFileSync(copy, daemon.dataFile);

    const refused = await startDaemon({ dataDir: daemon.dataDir, noWait: true });
    expect(await refused.exited).toEqual({ code: 1, signal: null });
    expect(refused.stderr()).toContain(`its files hold records only up to seq ${old.last_seq}`);
  });

  it('removes temp files a killed daemon left behind', async () => {
    const dataDir = join(tempDir('taskhistory-stray-'), 'data');
    mkdirSync(dataDir, { recursive: true });
    const strays = ['.task_history.json.4242.1.tmp', '.cloud_cursor.json.4242.7.tmp', `${journalSegmentName(1)}.4242.restore.tmp`];
    for (const name of strays) writeFileSync(join(dataDir, name), 'x'.repeat(1 << 20));
    writeFileSync(join(dataDir, 'notes.tmp'), 'not ours');
    const daemon = await startDaemon({ dataDir });
    for (const name of strays) expect(existsSync(join(dataDir, name)), name).toBe(false);
    expect(existsSync(join(dataDir, 'notes.tmp'))).toBe(true);
    expect(daemon.stderr()).toContain(`removed a temp file left by a daemon that was killed mid-write file=${join(dataDir, strays[0])}`);
    expect(await daemon.stop()).toEqual({ code: 0, signal: null });
  });

  it('refuses a journal segment that is a symbolic link, naming it, and leaves its target alone', async () => {
    const dataDir = join(tempDir('taskhistory-symlink-'), 'data');
    mkdirSync(dataDir, { recursive: true });
    const target = join(tempDir('taskhistory-elsewhere-'), 'precious.txt');
    writeFileSync(target, 'not a journal\n');
    const link = join(dataDir, journalSegmentName(1));
    symlinkSync(target, link);
    const refused = await startDaemon({ dataDir, noWait: true });
    expect(await refused.exited).toEqual({ code: 1, signal: null });
    expect(refused.stderr()).toContain(`${link} is a symbolic link or not a regular file`);
    expect(readFileSync(target, 'utf8')).toBe('not a journal\n');
  });
});

describe('many tasks at once', () => {
  // A test of cost, not of time: before trimming was linear, this took minutes and answered nothing at 100k.
  it('20,000 create_task calls pipelined on one connection all complete, then 20,000 complete_task trim to max_tasks', async () => {
    const COUNT = 20_000;
    const daemon = await startDaemon({ args: [...JOURNAL_ONLY, '--max-tasks', '100'] });
    const raw = await openRawSocket(daemon.socketPath);
    for (let id = 1; id <= COUNT; id++) {
      raw.send(JSON.stringify({ jsonrpc: '2.0', id, method: 'create_task', params: { description: `job ${id}`, mode: 'autonomous', steps: [] } }));
    }
    const taskIds: string[] = [];
    for (let answered = 0; answered < COUNT; answered++) taskIds.push((await raw.next(60_000)).result.task_id);
    expect(new Set(taskIds).size).toBe(COUNT);
    // Running tasks are never trimmed; finishing them trims down to max_tasks.
    expect((await status(raw)).tasks).toBe(COUNT);
    taskIds.forEach((taskId, i) => raw.send(JSON.stringify({ jsonrpc: '2.0', id: COUNT + i + 1, method: 'complete_task', params: { task_id: taskId, final_status: 'completed' } })));
    for (let answered = 0; answered < COUNT; answered++) expect((await raw.next(60_000)).error).toBeUndefined();
    expect(await status(raw)).toMatchObject({ tasks: 100, last_seq: 2 * COUNT });
    const kept = (await raw.call('to_dict', {})) as { tasks: { task_id: string }[] };
    expect(kept.tasks.map((task) => task.task_id)).toEqual(taskIds.slice(-100));
    raw.close();
    expect(await daemon.stop()).toEqual({ code: 0, signal: null });
  }, 300_000);
});
