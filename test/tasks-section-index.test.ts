import { existsSync, readFileSync, statSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { endianness } from 'node:os';
import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { readTasksSectionIndex, writeTasksSectionIndex } from '../daemon/tasks-section-index.js';
import { openRawSocket, startDaemon, type Daemon } from './daemon-harness.js';
import { tempDir } from './processes.js';

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
    torn[4] ^= 1;
    writeFileSync(indexFile, torn);
    const afterTorn = await restartedAnswers(daemon);
    expect(afterTorn).toMatchObject({ tasks: logged, verified: true });
    expect(afterTorn.stderr).not.toContain('tasks index');

    // Well formed and about this file, but its first task's head one byte longer: it does not add up.
    expect(endianness()).toBe('LE');
    const misfit = Buffer.from(good);
    // Its numbers are 4 bytes each below 4 GiB: the first task's created seq, then its head line's bytes.
    misfit.writeUInt32LE(misfit.readUInt32LE(4) + 1, 4);
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

describe('the tasks index file', () => {
  it('reads back what was written, in 4-byte numbers and, past 4 GiB, in 8-byte ones', async () => {
    const dataFile = join(tempDir('tasks-index-'), 'task_history.json');
    writeFileSync(dataFile, '{}');
    const tasks = [
      { createdSeq: 1, headBytes: 120, steps: 2, stepSeq: (s: number) => [2, 5][s], stepLineBytes: (s: number) => [300, 301][s] },
      { createdSeq: 3, headBytes: 121, steps: 0, stepSeq: () => expect.fail('no steps'), stepLineBytes: () => expect.fail('no steps') },
    ];
    // Enough steps to fill the writer's batches of numbers several times.
    const long = { createdSeq: 10, headBytes: 99, steps: 10_000, stepSeq: (s: number) => 11 + s, stepLineBytes: (s: number) => 200 + (s % 7) };
    const sizes: number[] = [];
    for (const [size, lastSeq] of [[2, 6], [2 ** 33, 6], [2, 2 ** 40]]) {
      const stats = { ...statSync(dataFile), size };
      await writeTasksSectionIndex(dataFile, stats, lastSeq, 77, tasks);
      const index = readTasksSectionIndex(dataFile, stats);
      expect(index?.tasksAt).toBe(77);
      expect(index?.tasks.map((task) => ({ ...task, steps: [...task.steps] }))).toEqual([
        { createdSeq: 1, headBytes: 120, steps: [2, 300, 5, 301] },
        { createdSeq: 3, headBytes: 121, steps: [] },
      ]);
      expect(readTasksSectionIndex(dataFile, { ...stats, size: size + 1 })).toBeNull();
      await writeTasksSectionIndex(dataFile, stats, lastSeq, 77, [...tasks, long]);
      const longRead = readTasksSectionIndex(dataFile, stats)?.tasks[2];
      expect(longRead?.steps.length).toBe(20_000);
      expect([...(longRead?.steps ?? [])].filter((_, i) => i % 2 === 0)).toEqual(Array.from({ length: 10_000 }, (_, s) => 11 + s));
      expect([...(longRead?.steps ?? [])].filter((_, i) => i % 2 === 1)).toEqual(Array.from({ length: 10_000 }, (_, s) => 200 + (s % 7)));
      await writeTasksSectionIndex(dataFile, stats, lastSeq, 77, tasks);
      sizes.push(statSync(`${dataFile}.tasks-index`).size);
    }
    // Its 10 numbers (3 a task, 2 a step) take 4 bytes more each when wide; the second trailer also names a 10-digit size.
    expect([sizes[1] - sizes[0], sizes[2] - sizes[0]]).toEqual([10 * 4 + 9, 10 * 4]);
  });
});
