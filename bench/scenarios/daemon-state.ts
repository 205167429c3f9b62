import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { StatusResult } from '../../protocol/methods.js';
import type { RpcSocket } from '../rpc-socket.js';
import { nowMs } from '../stats.js';

/** Reading the daemon's state between phases of a scenario: its status, its files on disk. */
export function daemonStatus(socket: RpcSocket): Promise<StatusResult> {
  return socket.call<StatusResult>('status');
}

/** Polls `status` until `done` holds or `timeoutMs` passes; returns the last status and whether it held. */
export async function pollStatus(
  socket: RpcSocket,
  done: (status: StatusResult) => boolean,
  timeoutMs: number,
  intervalMs = 20,
): Promise<{ status: StatusResult; held: boolean; atMs: number }> {
  const deadline = nowMs() + timeoutMs;
  for (;;) {
    const status = await daemonStatus(socket);
    const atMs = nowMs();
    if (done(status)) return { status, held: true, atMs };
    if (atMs > deadline) return { status, held: false, atMs };
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** Waits (a few seconds at most) until the checkpoint covers every committed record. */
export async function waitForCheckpoint(socket: RpcSocket): Promise<void> {
  await pollStatus(socket, (status) => status.checkpoint_seq >= status.last_seq, 5000, 50);
}

/** Bytes of every file in the data directory, in MB. */
export function dataDirMB(dataDir: string): number {
  let bytes = 0;
  for (const name of readdirSync(dataDir)) bytes += statSync(join(dataDir, name)).size;
  return bytes / 1e6;
}
