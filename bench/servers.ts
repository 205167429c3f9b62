import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { shebangNodeFlags } from '../node/shebang-flags.js';
import { RpcSocket, type Framing } from './rpc-socket.js';
import { nowMs } from './stats.js';
import type { PeerKind } from './peers/store.js';

/**
 * The processes a benchmark run starts: the daemon, the peers and the cloud endpoint, each a real
 * process from dist/. Every one is tracked and killed by pid if the run ends early.
 */
export const DIST = resolve(import.meta.dirname, '..');
export const DAEMON_BIN = join(DIST, 'bin/taskhistoryd.js');
export const CLOUD_BIN = join(DIST, 'bin/taskhistory-cloud.js');
const PEER_BIN = join(DIST, 'bench/peers/peer-server.js');
const FLOOR_BIN = join(DIST, 'bench/peers/floor-server.js');
const STDERR_KEEP_CHARS = 64 * 1024;

const running = new Set<ChildProcess>();
function killRunning(): void {
  for (const child of running) if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
}
process.once('exit', killRunning);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    killRunning();
    process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
  });
}

export interface ServerProcess {
  name: string;
  pid: number;
  /** The last 64 KiB the process wrote to stderr. */
  stderr(): string;
  exited: Promise<number | null>;
  /** SIGTERM, then waits for the exit. */
  stop(): Promise<void>;
}

export function spawnServer(name: string, args: string[], nodeFlags: string[] = []): ServerProcess {
  const child = spawn(process.execPath, [...nodeFlags, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  if (child.pid === undefined) throw new Error(`could not start ${name}: node ${args.join(' ')}`);
  running.add(child);
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-STDERR_KEEP_CHARS)));
  const exited = new Promise<number | null>((done) =>
    child.once('exit', (code) => {
      running.delete(child);
      done(code);
    }),
  );
  const pid = child.pid;
  return {
    name,
    pid,
    stderr: () => stderr,
    exited,
    async stop() {
      if (running.has(child)) process.kill(pid, 'SIGTERM');
      await exited;
    },
  };
}

/** Resolves once `status` is answered on the socket; fails when the process exits or time runs out. */
export async function waitServing(server: ServerProcess, socketPath: string, timeoutMs = 30_000, framing: Framing = 'websocket'): Promise<void> {
  let exitCode: number | null | undefined;
  void server.exited.then((code) => (exitCode = code));
  const deadline = nowMs() + timeoutMs;
  for (;;) {
    if (exitCode !== undefined) throw new Error(`${server.name} exited (code ${exitCode}) before serving on ${socketPath}:\n${server.stderr()}`);
    if (await answersStatus(socketPath, framing)) return;
    if (nowMs() > deadline) throw new Error(`${server.name} did not answer status on ${socketPath} within ${timeoutMs} ms:\n${server.stderr()}`);
    await new Promise((done) => setTimeout(done, 1));
  }
}

async function answersStatus(socketPath: string, framing: Framing): Promise<boolean> {
  let socket: RpcSocket | undefined;
  try {
    socket = await RpcSocket.open(socketPath, framing);
    await socket.call('status');
    return true;
  } catch {
    return false;
  } finally {
    socket?.close();
  }
}

export interface DaemonOptions {
  socketPath: string;
  dataDir: string;
  maxTasks?: number;
  checkpointIdleMs?: number;
  cloudUrl?: string;
  cloudTokenFile?: string;
  /** Write a V8 CPU profile into this directory at exit. */
  cpuProfileDir?: string;
}

export function daemonArgs(options: DaemonOptions): string[] {
  return [
    ...shebangNodeFlags(DAEMON_BIN),
    DAEMON_BIN,
    '--socket', options.socketPath,
    '--data-dir', options.dataDir,
    '--machine-id', 'bench',
    ...(options.maxTasks !== undefined ? ['--max-tasks', String(options.maxTasks)] : []),
    ...(options.checkpointIdleMs !== undefined ? ['--checkpoint-idle-ms', String(options.checkpointIdleMs)] : []),
    ...(options.cloudUrl ? ['--cloud-url', options.cloudUrl] : []),
    ...(options.cloudTokenFile ? ['--cloud-token-file', options.cloudTokenFile] : []),
  ];
}

export async function startDaemon(options: DaemonOptions): Promise<ServerProcess> {
  const profileFlags = options.cpuProfileDir ? ['--cpu-prof', `--cpu-prof-dir=${options.cpuProfileDir}`] : [];
  const daemon = spawnServer('taskhistoryd', daemonArgs(options), profileFlags);
  await waitServing(daemon, options.socketPath);
  return daemon;
}

export interface PeerOptions {
  socketPath: string;
  dataDir: string;
  maxTasks?: number;
  sqliteModuleDir?: string;
  prefillOutputBytes?: number;
  prefillOutputSize?: number;
}

export async function startPeer(kind: PeerKind, options: PeerOptions): Promise<ServerProcess> {
  const peer = spawnServer(`peer ${kind}`, [
    PEER_BIN,
    '--store', kind,
    '--socket', options.socketPath,
    '--data-dir', options.dataDir,
    ...(options.maxTasks !== undefined ? ['--max-tasks', String(options.maxTasks)] : []),
    ...(options.sqliteModuleDir ? ['--sqlite-module-dir', options.sqliteModuleDir] : []),
    ...(options.prefillOutputBytes ? ['--prefill-output-bytes', String(options.prefillOutputBytes)] : []),
    ...(options.prefillOutputSize ? ['--prefill-output-size', String(options.prefillOutputSize)] : []),
  ]);
  await waitServing(peer, options.socketPath, 120_000);
  return peer;
}

/** Starts the floor server (see peers/floor-server.ts) for one framing. */
export async function startFloor(options: { socketPath: string; dataDir: string; framing: Framing }): Promise<ServerProcess> {
  const floor = spawnServer(`floor ${options.framing}`, [FLOOR_BIN, '--framing', options.framing, '--socket', options.socketPath, '--data-dir', options.dataDir]);
  await waitServing(floor, options.socketPath, 30_000, options.framing);
  return floor;
}

/** Starts the cloud endpoint and returns it with the URL it logs once listening. */
export async function startCloud(options: { dataDir: string; tokensFile: string; port?: number }): Promise<{ cloud: ServerProcess; url: string }> {
  const cloud = spawnServer('taskhistory-cloud', [
    CLOUD_BIN, '--port', String(options.port ?? 0), '--host', '127.0.0.1', '--data-dir', options.dataDir, '--tokens-file', options.tokensFile,
  ]);
  let exitCode: number | null | undefined;
  void cloud.exited.then((code) => (exitCode = code));
  const deadline = nowMs() + 15_000;
  for (;;) {
    const url = /listening url=(\S+)/.exec(cloud.stderr())?.[1];
    if (url) return { cloud, url };
    if (exitCode !== undefined || nowMs() > deadline) {
      await cloud.stop();
      throw new Error(`taskhistory-cloud did not log "listening url=..." ${exitCode !== undefined ? `(exited, code ${exitCode})` : 'within 15 s'}:\n${cloud.stderr()}`);
    }
    await new Promise((done) => setTimeout(done, 10));
  }
}

/** Peak resident set size (VmHWM) of a running process, in MB (10^6 bytes). */
export function peakRssMB(pid: number): number {
  const match = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no VmHWM line in /proc/${pid}/status`);
  return (Number(match[1]) * 1024) / 1e6;
}

/** /proc reports CPU times in USER_HZ ticks, which Linux fixes at 100 a second. */
const USER_HZ = 100;

/** CPU time (user and system) a running process has used so far, in ms, from /proc/<pid>/stat. */
export function cpuTimeMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command, which is in parentheses and may hold spaces: state is field 3, utime 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / USER_HZ;
}
