import { existsSync, readFileSync, statSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { endianness } from 'node:os';
import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { openRawSocket, startDaemon, type Daemon } from './daemon-harness.js';

/**
 * The tasks index a checkpoint writes beside the data file (`task_history.json.tasks-index`, laid
 * out in daemon/tasks-section-index.ts): a start that has it places every step from it instead of
 * reading the steps, and answers exactly what a start that walks the whole file answers; one that
 * is torn, about another file, or does not add up to this one is ignored.
 */
const ARGS = ['--cache-bytes', '1', '--max-tasks', '2'];
/** The index's tail: the trailer's length (u32), the CRC-32 (u32), the 8-byte magic. */
const TAIL_BYTES = 16;

/** A log larger than the cache (a small one is walked whole, to be cached), with trimmed, finished and running tasks. */
async function loggedDaemon(): Promise<{ daemon: Daemon; logged: unknown }> {
  const daemon = await startDaemon({ args: ARGS });
  const socket = await openRawSocket(daemon.socketPath);
  const tasks: string[] = [];
  for (let t = 0; t < 5; t++) tasks.push((await socket.call('create_task', { description: `job ${t}`, mode: 'autonomous', steps: ['a', 'b'] })).task_id);
  for (let step = 1; step <= 3; step++) {
    for (const task of tasks) await socket.call('log_step', { task_id: task, step_num: step, status: 'success', command: `run ${step}`, output: `out ${step} of ${task}\n`.repeat(step * 20) });
  }
  for (const task of tasks.slice(0, 4)) await socket.call('complete_task', { task_id: task, final_status: 'completed' });
  const logged = await socket.call('to_dict', {});
  socket.close();
  await daemon.stop();
  return { daemon, logged };
}

/** What a daemon restarted on the data dir answers (every kept step read back through its place), and what it logged. */
async function restartedAnswers(daemon: Daemon): Promise<{ tasks: unknown; verified: boolean; stderr: string }> {
  const restarted = await startDaemon({ dataDir: daemon.dataDir, args: ARGS });
  const socket = await openRawSocket(restarted.socketPath);
  const tasks = await socket.call('to_dict', {});
  const verified = (await socket.call('verify', {})).ok as boolean;
  socket.close();
  await restarted.stop();
  return { tasks, verified, stderr: restarted.stderr() };
}

describe('the tasks index beside a checkpoint', () => {
  it('is written with the checkpoint, small, and a start from it answers what a walk of the whole file answers', async () => {
    const { daemon, logged } = await loggedDaemon();
    const indexFile = `${daemon.dataFile}.tasks-index`;
    expect(existsSync(indexFile)).toBe(true);
    expect(statSync(indexFile).size).toBeLessThan(statSync(daemon.dataFile).size / 10);
    expect((logged as { tasks: { status: string }[] }).tasks.map((task) => task.status)).toContain('running');

    const fromIndex = await restartedAnswers(daemon);
    expect(fromIndex).toMatchObject({ tasks: logged, verified: true });
    expect(fromIndex.stderr).toContain('placed the data file\'s steps from its tasks index');
    expect(fromIndex.stderr).not.toContain('does not fit');
    // Nothing changed, so that stop wrote no checkpoint and the index still fits.
    expect(existsSync(indexFile)).toBe(true);

    unlinkSync(indexFile);
    const walked = await restartedAnswers(daemon);
    expect(walked).toMatchObject({ tasks: logged, verified: true });
    expect(walked.stderr).not.toContain('tasks index');
  });

  it('is ignored when it is torn, about another file, or does not add up to this one: the start reads the whole file', async () => {
    const { daemon, logged } = await loggedDaemon();
    const indexFile = `${daemon.dataFile}.tasks-index`;
    const good = readFileSync(indexFile);

    // Torn: a byte of its numbers changed, so its CRC-32 fails; ignored without a word.
    const torn = Buffer.from(good);
    torn[8] ^= 1;
    writeFileSync(indexFile, torn);
    const afterTorn = await restartedAnswers(daemon);
    expect(afterTorn).toMatchObject({ tasks: logged, verified: true });
    expect(afterTorn.stderr).not.toContain('tasks index');

    // Well formed and about this file, but its first task's head one byte longer: it does not add up.
    expect(endianness()).toBe('LE');
    const misfit = Buffer.from(good);
    misfit.writeDoubleLE(misfit.readDoubleLE(8) + 1, 8);
    misfit.writeUInt32LE(crc32(misfit.subarray(0, misfit.length - TAIL_BYTES)), misfit.length - TAIL_BYTES + 4);
    writeFileSync(indexFile, misfit);
    const afterMisfit = await restartedAnswers(daemon);
    expect(afterMisfit).toMatchObject({ tasks: logged, verified: true });
    expect(afterMisfit.stderr).toMatch(/tasks index does not fit it.*adds up to/);

    // About another file: the data file's mtime moved (as an edit in place moves it).
    writeFileSync(indexFile, good);
    const { atime, mtime } = statSync(daemon.dataFile);
    utimesSync(daemon.dataFile, atime, new Date(mtime.getTime() + 1000));
    const afterTouch = await restartedAnswers(daemon);
    expect(afterTouch).toMatchObject({ tasks: logged, verified: true });
    expect(afterTouch.stderr).not.toContain('tasks index');
  });
});
