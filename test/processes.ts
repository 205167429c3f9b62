import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Every process a test spawned, killed by pid when its file ends (see setup.ts). */
const spawned = new Set<ChildProcess>();
const tempDirs: string[] = [];

export interface Spawned {
  proc: ChildProcess;
  pid: number;
  /** Everything the process wrote to stdout/stderr so far. */
  stdout(): string;
  stderr(): string;
  /** Resolves with the exit code (null when killed by a signal) once it has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function spawnTracked(command: string, args: string[], options: SpawnOptions = {}): Spawned {
  const proc = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  if (proc.pid === undefined) throw new Error(`could not spawn ${command}`);
  spawned.add(proc);
  let out = '';
  let err = '';
  // Decoded as a stream: a multi-byte character split between two chunks stays whole.
  proc.stdout?.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  proc.stderr?.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('exit', (code, signal) => {
      spawned.delete(proc);
      resolve({ code, signal });
    }),
  );
  return { proc, pid: proc.pid, stdout: () => out, stderr: () => err, exited };
}

export function killAllSpawned(): void {
  for (const proc of spawned) {
    try {
      if (proc.pid !== undefined) process.kill(proc.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  spawned.clear();
}

/** A fresh directory under the system temp dir, removed when the test file ends. */
export function tempDir(prefix = 'taskhistory-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

export function removeTempDirs(): void {
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it returns a truthy value or `timeoutMs` passes. */
export async function waitFor<T>(check: () => T | Promise<T>, timeoutMs = 10_000, what = 'condition'): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** A loopback TCP port the kernel just handed out and took back: free to listen on, nothing listens there. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}
