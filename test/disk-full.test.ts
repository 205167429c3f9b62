import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDataFile } from '../protocol/chain-verify.js';
import { recordsOfDataFile } from '../protocol/data-file-v2.js';
import { sha256Hex } from '../node/sha256.js';
import { ErrorCodes } from '../protocol/errors.js';
import type { StatusResult } from '../protocol/methods.js';
import type { TaskView } from '../protocol/task-view.js';
import { verifyDataFileOnDisk } from '../node/verify-files.js';
import { openRawSocket, startDaemon, type Daemon, type RawSocket } from './daemon-harness.js';
import { tempDir, waitFor } from './processes.js';

/**
 * The data dir on a 2 MiB tmpfs that fills up: every call in a failing commit gets StorageFailure
 * and nothing it carried is recorded, the file stays valid, the daemon stays up, and logging
 * resumes on its own once space is freed. Needs root (mount); skipped with the reason otherwise.
 */

const TMPFS_SIZE = '2M';
/** Bigger than a tmpfs page, so every refused step needs space the full disk does not have. */
const BIG_OUTPUT = 'disk full test output '.repeat(400);

/** BIG_OUTPUT steps that fill the journal's preallocated space, and more. */
const MAX_STEPS_UNTIL_FULL = 300;

/** Writes `path` until the file system has no byte left. */
function fillDisk(path: string): void {
  const fd = openSync(path, 'w');
  try {
    for (let size = 1 << 16; size >= 1; size >>= 1) {
      const chunk = Buffer.alloc(size, 0x2e);
      for (;;) {
        try {
          if (writeSync(fd, chunk) < size) break;
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
          break;
        }
      }
    }
  } finally {
    closeSync(fd);
  }
}

/** A call's outcome: the seq it was acknowledged with, or the error code it was refused with. */
type Outcome = { seq: number } | { code: number; message: string };

async function attempt(raw: RawSocket, method: string, params: Record<string, unknown>): Promise<Outcome> {
  const response = await raw.request(method, params);
  return response.error ? { code: response.error.code, message: response.error.message } : { seq: response.result.seq };
}

describe(`a data dir on a ${TMPFS_SIZE} tmpfs that fills up`, () => {
  const mountPoint = tempDir('taskhistory-tmpfs-');
  const filler = join(mountPoint, 'filler');
  let skipReason: string | null = null;
  let daemon: Daemon | undefined;
  let raw: RawSocket;
  let taskId: string;
  /** Step commands acknowledged with a seq, and those refused. */
  const acked = new Map<string, number>();
  const refused = new Set<string>();
  let nextStep = 1;

  const logStep = async (socket: RawSocket, command: string, output: string) => {
    const outcome = await attempt(socket, 'log_step', { task_id: taskId, step_num: nextStep++, command, status: 'success', output });
    if ('seq' in outcome) acked.set(command, outcome.seq);
    else refused.add(command);
    return outcome;
  };

  beforeAll(async () => {
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${TMPFS_SIZE}`, 'tmpfs', mountPoint], { stdio: 'pipe' });
    } catch (error) {
      const stderr = (error as { stderr?: Buffer }).stderr?.toString().trim();
      skipReason = `cannot mount a tmpfs at ${mountPoint} (${stderr || (error as Error).message}): the disk-full tests need root and mount(8), skipped`;
      console.warn(skipReason);
      return;
    }
    daemon = await startDaemon({ dataDir: join(mountPoint, 'data'), args: ['--checkpoint-idle-ms', '100'] });
    raw = await openRawSocket(daemon.socketPath);
    taskId = (await raw.call('create_task', { description: 'fill the disk', mode: 'autonomous', steps: [] })).task_id;
    for (let i = 1; i <= 3; i++) await logStep(raw, `before ${i}`, BIG_OUTPUT);
  });

  afterAll(async () => {
    raw?.close();
    await daemon?.stop('SIGKILL');
    if (!skipReason) execFileSync('umount', ['-l', mountPoint]);
  });

  it('refuses calls with StorageFailure, acknowledges nothing it did not write, and stays up with a valid file', async (ctx) => {
    ctx.skip(skipReason !== null, skipReason ?? undefined);
    const live = daemon as Daemon;
    fillDisk(filler);

    // Steps still fit into the journal's preallocated space (up to 256 KiB); then every one is refused.
    const outcomes: Outcome[] = [];
    for (let i = 1; i <= MAX_STEPS_UNTIL_FULL && !outcomes.some((o) => 'code' in o); i++) outcomes.push(await logStep(raw, `full ${i}`, BIG_OUTPUT));
    const firstRefused = outcomes.length;
    for (let i = 1; i <= 3; i++) outcomes.push(await logStep(raw, `full after ${i}`, BIG_OUTPUT));
    expect(outcomes.slice(firstRefused - 1).every((o) => 'code' in o), 'every step after the first refused one is refused').toBe(true);
    // One group commit carrying several calls from several connections: all of it fails together.
    const sockets = await Promise.all(Array.from({ length: 4 }, () => openRawSocket(live.socketPath)));
    outcomes.push(...(await Promise.all(sockets.map((socket, i) => logStep(socket, `full burst ${i}`, BIG_OUTPUT)))));
    // A refused write gives back the rest of the preallocated space it began to fill: bigger than a step.
    outcomes.push(await attempt(raw, 'create_task', { description: 'x'.repeat(3000), mode: 'autonomous', steps: ['y'.repeat(16000)] }));
    for (const socket of sockets) socket.close();

    const failures = outcomes.filter((o): o is { code: number; message: string } => 'code' in o);
    expect(failures.length, 'calls refused while the disk is full').toBeGreaterThan(0);
    expect(new Set(failures.map((f) => f.code))).toEqual(new Set([ErrorCodes.StorageFailure]));
    expect(failures[0].message).toContain('ENOSPC');
    expect(failures[0].message).toContain(join(mountPoint, 'data'));

    const status: StatusResult = await raw.call('status', {});
    expect(live.proc.exitCode).toBeNull();
    expect(status.storage_error).toContain('ENOSPC');
    // Memory does not run ahead of the disk: the head is the last acknowledged record.
    expect(status.last_seq).toBe(Math.max(...acked.values(), ...outcomes.flatMap((o) => ('seq' in o ? [o.seq] : []))));
    const task: TaskView = await raw.call('get_task', { task_id: taskId });
    expect(task.steps.map((s) => s.command)).toEqual([...acked.keys()]);

    expect(await raw.call('verify', {})).toMatchObject({ ok: true, head: { seq: status.last_seq } });
    expect(verifyDataFileOnDisk(live.dataFile)).toMatchObject({ ok: true, head: { seq: status.last_seq } });
  });

  it('resumes logging by itself once space is freed', async (ctx) => {
    ctx.skip(skipReason !== null, skipReason ?? undefined);
    unlinkSync(filler);
    const resumed = await logStep(raw, 'after 1', BIG_OUTPUT);
    expect(resumed).toHaveProperty('seq');
    expect((await raw.call('status', {})).storage_error).toBeNull();
    await logStep(raw, 'after 2', BIG_OUTPUT);
    expect(await raw.call('complete_task', { task_id: taskId, final_status: 'completed' })).toHaveProperty('seq');
    // The checkpoint catches up too.
    await waitFor(async () => {
      const status: StatusResult = await raw.call('status', {});
      return status.checkpoint_seq === status.last_seq;
    }, 15_000, 'the checkpoint to be written again');
    expect(await raw.call('verify', {})).toMatchObject({ ok: true });
  });

  it('keeps every acknowledged step and none of the refused ones across a restart', async (ctx) => {
    ctx.skip(skipReason !== null, skipReason ?? undefined);
    const live = daemon as Daemon;
    raw.close();
    expect(await live.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    const doc = parseDataFile(readFileSync(live.dataFile, 'utf8'));
    expect(verifyDataFileOnDisk(live.dataFile)).toMatchObject({ ok: true, head: doc.head });
    expect(recordsOfDataFile(doc, sha256Hex).map((r) => r.seq)).toEqual(Array.from({ length: doc.head.seq }, (_, i) => i + 1));

    daemon = await startDaemon({ dataDir: live.dataDir, socketPath: live.socketPath });
    raw = await openRawSocket(daemon.socketPath);
    const task: TaskView = await raw.call('get_task', { task_id: taskId });
    expect(task.steps.map((s) => [s.command, s.seq])).toEqual([...acked.entries()]);
    expect(task.steps.filter((s) => refused.has(s.command))).toEqual([]);
    expect(refused.size).toBeGreaterThan(0);
    expect(task.status).toBe('completed');
  });
});
