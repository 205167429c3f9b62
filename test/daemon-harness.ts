import { connect } from 'node:net';
import { join, resolve } from 'node:path';
import WebSocket from 'ws';
import { afterAll, beforeAll } from 'vitest';
import { socketUrl } from '../protocol/paths.js';
import { spawnTracked, tempDir, waitFor, type Spawned } from './processes.js';

export const REPO = resolve(import.meta.dirname, '..');
export const DAEMON_BIN = join(REPO, 'dist/bin/taskhistoryd.js');
export const CLI_BIN = join(REPO, 'dist/bin/taskhistory.js');
export const CLOUD_BIN = join(REPO, 'dist/bin/taskhistory-cloud.js');

export interface DaemonOptions {
  /** Reuse a data dir (for restarts); a fresh temp dir otherwise. */
  dataDir?: string;
  socketPath?: string;
  args?: string[];
  env?: NodeJS.ProcessEnv;
  /** Do not wait for the socket to answer (for daemons expected to fail). */
  noWait?: boolean;
}

export interface Daemon extends Spawned {
  socketPath: string;
  dataDir: string;
  dataFile: string;
  /** SIGTERM (or the given signal) and wait for the exit. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts the real daemon binary on a socket in a temp dir and waits until it accepts connections. */
export async function startDaemon(options: DaemonOptions = {}): Promise<Daemon> {
  const dir = tempDir('taskhistoryd-');
  const dataDir = options.dataDir ?? join(dir, 'data');
  const socketPath = options.socketPath ?? join(dir, 'run', 'taskhistoryd.sock');
  const child = spawnTracked(
    process.execPath,
    [DAEMON_BIN, '--socket', socketPath, '--data-dir', dataDir, '--machine-id', 'test-machine', ...(options.args ?? [])],
    { env: { ...environmentWithoutSettings(), TASKHISTORY_LOG_LEVEL: 'info', ...options.env } },
  );
  const daemon: Daemon = {
    ...child,
    socketPath,
    dataDir,
    dataFile: join(dataDir, 'task_history.json'),
    async stop(signal = 'SIGTERM') {
      try {
        process.kill(child.pid, signal);
      } catch {
        // already exited
      }
      return child.exited;
    },
  };
  if (!options.noWait) {
    let exitedEarly = false;
    void child.exited.then(() => (exitedEarly = true));
    await waitFor(async () => {
      if (exitedEarly) throw new Error(`daemon exited during start-up:\n${child.stderr()}`);
      return daemonServes(socketPath);
    }, 15_000, `daemon socket ${socketPath}`);
  }
  return daemon;
}

/** The test runner's environment minus TASKHISTORY_* settings, which would silently change every daemon. */
export function environmentWithoutSettings(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('TASKHISTORY_')));
}

/**
 * Whether the daemon answers a request, not merely whether the socket accepts: the kernel accepts
 * connections as soon as the socket listens, before the daemon has set the socket's mode and group.
 */
function daemonServes(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect(socketPath);
    probe.setEncoding('utf8');
    probe.once('connect', () => probe.write('{"jsonrpc":"2.0","id":1,"method":"status"}\n'));
    probe.on('data', (text: string) => {
      if (!text.includes('\n')) return;
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
    probe.once('close', () => resolve(false));
  });
}

export { socketAccepts as socketAnswers } from '../node/socket-probe.js';

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the real CLI binary to its end ('close', so all its output is in), optionally feeding stdin. */
export async function runCli(args: string[], options: { env?: NodeJS.ProcessEnv; stdin?: string } = {}): Promise<CliRun> {
  const { env, stdin } = options;
  const child = spawnTracked(process.execPath, [CLI_BIN, ...args], {
    env: { ...process.env, ...env },
    stdio: [stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
  });
  if (stdin !== undefined) child.proc.stdin?.end(stdin);
  const code = await new Promise<number | null>((resolve) => child.proc.once('close', (exitCode) => resolve(exitCode)));
  return { code, stdout: child.stdout(), stderr: child.stderr() };
}

/** A bare WebSocket to the daemon, for tests of the wire itself. */
export async function openRawSocket(socketPath: string): Promise<RawSocket> {
  const ws = new WebSocket(socketUrl(socketPath));
  await new Promise<void>((res, rej) => {
    ws.once('open', () => res());
    ws.once('error', rej);
  });
  return new RawSocket(ws);
}

export class RawSocket {
  private readonly inbox: unknown[] = [];
  private waiters: ((message: unknown) => void)[] = [];
  closed: { code: number; reason: string } | null = null;

  constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const message = JSON.parse(data.toString());
      const waiter = this.waiters.shift();
      if (waiter) waiter(message);
      else this.inbox.push(message);
    });
    ws.on('close', (code, reason) => (this.closed = { code, reason: reason.toString() }));
    ws.on('error', () => undefined);
  }

  send(text: string): void {
    this.ws.send(text);
  }

  /** The next message from the daemon (a response, a batch or a notification). */
  next(timeoutMs = 5000): Promise<any> {
    if (this.inbox.length > 0) return Promise.resolve(this.inbox.shift());
    return new Promise((res, rej) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        rej(new Error(`no message within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = (message: unknown) => {
        clearTimeout(timer);
        res(message);
      };
      this.waiters.push(waiter);
    });
  }

  /** Resolves true when nothing arrives within `ms` (for notifications that must get no answer). */
  async silentFor(ms: number): Promise<boolean> {
    try {
      await this.next(ms);
      return false;
    } catch {
      return true;
    }
  }

  private nextId = 1;
  /** Sends one request and returns its whole response object. */
  async request(method: string, params?: unknown): Promise<any> {
    const id = this.nextId++;
    this.send(JSON.stringify({ jsonrpc: '2.0', id, method, ...(params !== undefined && { params }) }));
    const others: unknown[] = [];
    for (;;) {
      const message = await this.next();
      if (message && typeof message === 'object' && (message as { id?: unknown }).id === id) {
        this.inbox.unshift(...others);
        return message;
      }
      others.push(message);
    }
  }

  /** Sends one request and returns its result, throwing on an error response. */
  async call(method: string, params?: unknown): Promise<any> {
    const response = await this.request(method, params);
    if (response.error) throw Object.assign(new Error(response.error.message), response.error);
    return response.result;
  }

  close(): void {
    this.ws.close();
  }
}

/** A daemon and one WebSocket to it, for a whole describe block; the socket is closed after it. */
export function daemonWithSocket(options: DaemonOptions = {}): { daemon: Daemon; socket: RawSocket } {
  const suite = {} as { daemon: Daemon; socket: RawSocket };
  beforeAll(async () => {
    suite.daemon = await startDaemon(options);
    suite.socket = await openRawSocket(suite.daemon.socketPath);
  });
  afterAll(() => suite.socket?.close());
  return suite;
}
