import { describe, expect, it } from 'vitest';
import { readDataFileContent } from './data-file-reading.js';
import { ErrorCodes } from '../protocol/errors.js';
import { GENESIS_HASH } from '../protocol/records.js';
import { verifyDataFileOnDisk } from '../node/verify-files.js';
import { openRawSocket, startDaemon, type RawSocket } from './daemon-harness.js';

/** --max-tasks trims the oldest finished tasks; running tasks are never trimmed; the chain still verifies. */

const ids = (tasks: { task_id: string }[]) => tasks.map((task) => task.task_id);

async function createTask(rpc: RawSocket, description: string): Promise<string> {
  return (await rpc.call('create_task', { description, mode: 'autonomous', steps: [description] })).task_id;
}

async function finishedTask(rpc: RawSocket, description: string): Promise<string> {
  const taskId = await createTask(rpc, description);
  await rpc.call('log_step', { task_id: taskId, step_num: 1, command: `run ${description}`, status: 'success', output: description });
  await rpc.call('complete_task', { task_id: taskId, final_status: 'completed' });
  return taskId;
}

describe('max_tasks trimming', () => {
  it('keeps an old running task, drops the oldest finished ones down to max, and the chain still verifies', async () => {
    const daemon = await startDaemon({ args: ['--max-tasks', '3'] });
    const rpc = await openRawSocket(daemon.socketPath);
    const running = await createTask(rpc, 'long-running');
    await rpc.call('log_step', { task_id: running, step_num: 1, command: 'start', status: 'success' });
    const finished: string[] = [];
    for (const name of ['b', 'c', 'd', 'e', 'f']) finished.push(await finishedTask(rpc, name));

    const dict = await rpc.call('to_dict');
    expect(dict.count).toBe(3);
    expect(dict.max_tasks).toBe(3);
    expect(ids(dict.tasks)).toEqual([running, finished[3], finished[4]]);
    for (const trimmed of finished.slice(0, 3)) {
      const response = await rpc.request('get_task', { task_id: trimmed });
      expect(response.error).toEqual({ code: ErrorCodes.TaskNotFound, message: `no task ${trimmed}`, data: { task_id: trimmed } });
      expect((await rpc.request('log_step', { task_id: trimmed, step_num: 2, command: 'x', status: 'success' })).error.code).toBe(ErrorCodes.TaskNotFound);
    }

    // The running task still takes steps, and the survivors are untouched.
    await rpc.call('log_step', { task_id: running, step_num: 2, command: 'still going', status: 'success' });
    expect((await rpc.call('get_task', { task_id: running })).steps.map((s: { command: string }) => s.command)).toEqual(['start', 'still going']);
    const status = await rpc.call('status');
    expect(status).toMatchObject({ tasks: 3, running_tasks: 1, max_tasks: 3, last_seq: 2 + 5 * 3 + 1 });

    const report = await rpc.call('verify');
    expect(report).toMatchObject({ ok: true, first_bad_seq: null, head: { seq: status.last_seq, hash: status.head_hash } });
    rpc.close();

    expect(await daemon.stop()).toEqual({ code: 0, signal: null });
    const file = readDataFileContent(daemon.dataFile);
    expect(ids(file.tasks)).toEqual([running, finished[3], finished[4]]);
    expect(file.count).toBe(3);
    expect(file.max_tasks).toBe(3);
    // The running task holds seq 1, so nothing folds into the anchor: the trimmed tasks' 9 records are stubs.
    expect(file.anchor).toEqual({ seq: 0, hash: GENESIS_HASH });
    expect(file.stubs.map(([seq]) => seq)).toEqual([3, 4, 5, 6, 7, 8, 9, 10, 11]);
    expect(file.records.every((record) => record.type !== 'task_created' || !finished.slice(0, 3).includes(record.task_id))).toBe(true);
    expect(verifyDataFileOnDisk(daemon.dataFile)).toMatchObject({ ok: true, head: { seq: status.last_seq } });

    // A restart loads the trimmed file and continues the chain.
    const again = await startDaemon({ dataDir: daemon.dataDir });
    const rpc2 = await openRawSocket(again.socketPath);
    expect(ids((await rpc2.call('to_dict')).tasks)).toEqual([running, finished[3], finished[4]]);
    expect((await rpc2.call('complete_task', { task_id: running, final_status: 'completed' })).seq).toBe(status.last_seq + 1);
    expect(await rpc2.call('verify')).toMatchObject({ ok: true });
    rpc2.close();
    await again.stop();
  });

  it('never trims running tasks, even above max; a task finishing then is the oldest finished and goes at once', async () => {
    const daemon = await startDaemon({ args: ['--max-tasks', '2'] });
    const rpc = await openRawSocket(daemon.socketPath);
    const running = [await createTask(rpc, 'r1'), await createTask(rpc, 'r2'), await createTask(rpc, 'r3'), await createTask(rpc, 'r4')];
    expect(ids((await rpc.call('to_dict')).tasks)).toEqual(running);

    await rpc.call('complete_task', { task_id: running[2], final_status: 'failed' });
    expect(ids((await rpc.call('to_dict')).tasks)).toEqual([running[0], running[1], running[3]]);
    expect((await rpc.request('get_task', { task_id: running[2] })).error.code).toBe(ErrorCodes.TaskNotFound);
    expect(await rpc.call('verify')).toMatchObject({ ok: true });
    rpc.close();
    await daemon.stop();
  });

  it('when the oldest tasks are trimmed the anchor moves past them, and the file verifies from there', async () => {
    const daemon = await startDaemon({ args: ['--max-tasks', '2'] });
    const rpc = await openRawSocket(daemon.socketPath);
    const finished: string[] = [];
    for (const name of ['a', 'b', 'c', 'd']) finished.push(await finishedTask(rpc, name));
    expect(ids((await rpc.call('to_dict')).tasks)).toEqual(finished.slice(2));
    const status = await rpc.call('status');
    rpc.close();
    expect(await daemon.stop()).toEqual({ code: 0, signal: null });

    const file = readDataFileContent(daemon.dataFile);
    expect(file.anchor.seq).toBe(6); // a and b: 3 records each
    expect(file.stubs).toEqual([]);
    expect(file.records.map((record) => record.seq)).toEqual([7, 8, 9, 10, 11, 12]);
    expect(file.records[0].prev_hash).toBe(file.anchor.hash);
    expect(verifyDataFileOnDisk(daemon.dataFile)).toMatchObject({ ok: true, head: { seq: status.last_seq, hash: status.head_hash } });
  });
});
