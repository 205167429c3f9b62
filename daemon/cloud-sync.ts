import { readFileSync, statSync } from 'node:fs';
import WebSocket from 'ws';
import { CloudMethods, type CloudHead } from '../protocol/cloud-methods.js';
import { ErrorCodes, RpcError } from '../protocol/errors.js';
import { CLOUD_BATCH_BYTES, CLOUD_BATCH_RECORDS } from './settings.js';
import type { CloudStatus } from '../protocol/methods.js';
import { GENESIS_HASH, type ChainPoint, type ChainRecord } from '../protocol/records.js';
import { CloudCursor } from './cloud-cursor.js';
import { log } from '../node/log.js';

// The daemon's link to the cloud endpoint: the token file, one JSON-RPC connection, and the push loop.

/** Reads the bearer token from the first line of `path`; refuses a file others can read. */
export function readCloudToken(path: string): string {
  let mode: number;
  let text: string;
  try {
    mode = statSync(path).mode;
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new Error(`cannot read the cloud token file ${path}: ${(error as Error).message}`);
  }
  if ((mode & 0o077) !== 0) {
    throw new Error(`the cloud token file ${path} is accessible by group or others (mode ${(mode & 0o777).toString(8)}); run: chmod 600 ${path}`);
  }
  const token = text.split('\n')[0].trim();
  if (token === '') throw new Error(`the cloud token file ${path} is empty: put the token on its first line`);
  return token;
}

/** The status shown when no cloud is configured. */
export function disabledCloudStatus(): CloudStatus {
  return { state: 'disabled', url: null, queued: 0, acked_seq: 0, lag_ms: 0, last_error: null, next_retry_at: null, restore: null };
}

const BACKOFF_BASE_MS = 250;
const REQUEST_TIMEOUT_MS = 30_000;

/** Exponential backoff with full jitter: a uniformly random wait up to min(cap, base * 2^failures). */
export function backoffDelay(failures: number, capMs: number): number {
  return Math.round(Math.random() * Math.min(capMs, BACKOFF_BASE_MS * 2 ** failures));
}

/** The cloud refused the token: HTTP 401/403 at the upgrade, or an Unauthorized/Forbidden answer. */
export class CloudAuthError extends Error {}

export function isAuthFailure(error: unknown): boolean {
  return (
    error instanceof CloudAuthError ||
    (error instanceof RpcError && (error.code === ErrorCodes.Unauthorized || error.code === ErrorCodes.Forbidden))
  );
}

interface PendingRequest {
  resolve: (result: unknown) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

/** One WebSocket to the endpoint with JSON-RPC requests over it (string ids); error answers reject with RpcError. */
export class CloudConnection {
  private readonly pending = new Map<string, PendingRequest>();
  private nextId = 1;
  /** Why the connection ended; null while it is open. */
  failure: Error | null = null;
  /** Resolves once the connection has ended, with the reason. */
  readonly closed: Promise<Error>;

  private constructor(
    private readonly ws: WebSocket,
    private readonly url: string,
  ) {
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.failure = new Error(`the connection to ${url} closed (code ${code}${reason.length > 0 ? `, ${reason.toString()}` : ''})`);
        for (const request of this.pending.values()) {
          clearTimeout(request.timer);
          request.reject(this.failure);
        }
        this.pending.clear();
        resolve(this.failure);
      });
    });
    ws.on('message', (data) => this.receive(data.toString()));
  }

  static open(url: string, token: string, timeoutMs: number): Promise<CloudConnection> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}` }, handshakeTimeout: timeoutMs });
      // Also keeps errors after the open from crashing the daemon; 'close' follows them.
      ws.on('error', (error) => reject(new Error(`cannot connect to ${url}: ${error.message}`)));
      ws.once('unexpected-response', (req, res) => {
        const status = res.statusCode ?? 0;
        res.resume();
        req.destroy();
        reject(
          status === 401 || status === 403
            ? new CloudAuthError(`${url} refused the token (HTTP ${status}); check the cloud token file`)
            : new Error(`${url} answered HTTP ${status} instead of accepting a WebSocket`),
        );
      });
      ws.once('open', () => resolve(new CloudConnection(ws, url)));
    });
  }

  request<R>(method: string, params: unknown, timeoutMs = REQUEST_TIMEOUT_MS): Promise<R> {
    if (this.failure) return Promise.reject(this.failure);
    const id = String(this.nextId++);
    return new Promise<R>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${this.url} did not answer ${method} within ${timeoutMs} ms`));
        this.close();
      }, timeoutMs);
      this.pending.set(id, { resolve: resolve as (result: unknown) => void, reject, timer });
      this.ws.send(JSON.stringify({ jsonrpc: '2.0', id, method, params }));
    });
  }

  close(): void {
    this.ws.terminate();
  }

  private receive(text: string): void {
    let message: { id?: unknown; result?: unknown; error?: { code: number; message: string; data?: unknown } };
    try {
      message = JSON.parse(text);
    } catch {
      return log.warn('ignoring a cloud message that is not JSON', { url: this.url });
    }
    const request = typeof message?.id === 'string' ? this.pending.get(message.id) : undefined;
    if (!request) return;
    this.pending.delete(message.id as string);
    clearTimeout(request.timer);
    if (message.error) request.reject(new RpcError(message.error.code, message.error.message, message.error.data));
    else request.resolve(message.result);
  }
}

/** The part of the daemon's store (TaskStore) that the sync reads and steers. */
export interface SyncedStore {
  readonly machineId: string;
  readonly head: ChainPoint;
  hashAt(seq: number): string | undefined;
  recordsAfter(seq: number, maxRecords: number, maxBytes: number): ChainRecord[];
  onCommit(listener: (records: ChainRecord[]) => void): () => void;
  holdUnackedAbove(ackedSeq: number | null): void;
}

export interface CloudSyncOptions {
  store: SyncedStore;
  url: string;
  token: string;
  retryMaxMs: number;
  dataDir: string;
}

/** This machine's chain and the cloud's differ; pushing would either fail or hide it. */
class ForkDetected extends Error {}

/**
 * Pushes every committed record to the cloud exactly once, in order: on connect it asks `head`,
 * checks that the cloud holds a prefix of the local chain, then pushes whatever lies above, and
 * again right after each commit (one push in flight; commits during it go in the next batch).
 * Failures retry forever with capped, jittered backoff; a fork stops pushing for good.
 */
export class CloudSync {
  private state: CloudStatus['state'] = 'connecting';
  private acked: ChainPoint;
  private lastError: string | null = null;
  private nextRetryAt: number | null = null;
  private failures = 0;
  private stopped = false;
  private connection: CloudConnection | null = null;
  private wakeLoop: (() => void) | null = null;
  private endPause: (() => void) | null = null;
  private running: Promise<void> | null = null;
  private stopListening: (() => void) | null = null;
  private readonly cursor: CloudCursor;

  constructor(private readonly options: CloudSyncOptions) {
    this.cursor = new CloudCursor(options.dataDir);
    this.acked = this.cursor.load() ?? { seq: 0, hash: GENESIS_HASH };
  }

  start(): void {
    if (this.running) return;
    // Hold what the cloud may lack from the start, before the first connection says more.
    this.options.store.holdUnackedAbove(this.acked.seq);
    this.stopListening = this.options.store.onCommit(() => this.wake());
    this.running = this.run();
  }

  status(): CloudStatus {
    const { store, url } = this.options;
    const queued = Math.max(0, store.head.seq - this.acked.seq);
    return {
      state: this.state,
      url,
      queued,
      acked_seq: this.acked.seq,
      lag_ms: queued > 0 ? this.oldestUnackedAgeMs() : 0,
      last_error: this.lastError,
      next_retry_at: this.nextRetryAt === null ? null : new Date(this.nextRetryAt).toISOString(),
      restore: null,
    };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.stopListening?.();
    this.connection?.close();
    this.wake();
    this.endPause?.();
    await this.running;
    await this.cursor.flush();
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        await this.session();
      } catch (error) {
        if (this.stopped) break;
        const delay = this.afterFailure(error);
        if (delay === null) return;
        await this.pause(delay);
      }
    }
  }

  /** One connection: returns only when stopped, throws when the connection or the cloud fails. */
  private async session(): Promise<void> {
    const { store, url, token } = this.options;
    const connection = await CloudConnection.open(url, token, REQUEST_TIMEOUT_MS);
    this.connection = connection;
    void connection.closed.then(() => this.wake());
    try {
      if (this.stopped) return;
      const cloud = await connection.request<CloudHead>(CloudMethods.head.name, { machine_id: store.machineId });
      this.checkSameChain(cloud);
      this.acknowledge(cloud);
      if (this.state !== 'online') log.info('cloud sync online', { url, acked_seq: cloud.acked_seq, queued: store.head.seq - cloud.acked_seq });
      this.state = 'online';
      this.lastError = null;
      this.failures = 0;
      while (!this.stopped) {
        if (connection.failure) throw connection.failure;
        const batch = store.recordsAfter(this.acked.seq, CLOUD_BATCH_RECORDS, CLOUD_BATCH_BYTES);
        if (batch.length === 0) {
          await new Promise<void>((resolve) => (this.wakeLoop = resolve));
          continue;
        }
        const pushed = await connection.request<CloudHead>(CloudMethods.push.name, { machine_id: store.machineId, records: batch });
        this.acknowledge(pushed);
      }
    } finally {
      connection.close();
      this.connection = null;
    }
  }

  /** The cloud must hold a prefix of the local chain: not more records, and the same hash at its head. */
  private checkSameChain(cloud: CloudHead): void {
    const { store } = this.options;
    const local = store.head;
    if (cloud.acked_seq > local.seq) {
      throw new ForkDetected(`the cloud holds ${cloud.acked_seq} records for machine ${store.machineId}, this daemon only ${local.seq}`);
    }
    if (cloud.acked_seq === 0) return;
    const localHash = store.hashAt(cloud.acked_seq);
    // An unknown local hash (trimmed past the anchor) is checked by the cloud on the next push instead.
    if (localHash !== undefined && localHash !== cloud.head_hash) {
      throw new ForkDetected(`seq ${cloud.acked_seq} has hash ${cloud.head_hash} in the cloud but ${localHash} here`);
    }
  }

  private acknowledge(cloud: CloudHead): void {
    this.acked = { seq: cloud.acked_seq, hash: cloud.head_hash ?? GENESIS_HASH };
    this.options.store.holdUnackedAbove(this.acked.seq);
    this.cursor.save(this.acked);
  }

  /** Records the failure; returns how long to wait before the next attempt, or null to stop for good. */
  private afterFailure(error: unknown): number | null {
    const { url, store, retryMaxMs } = this.options;
    const message = describe(error);
    this.lastError = message;
    if (error instanceof ForkDetected || (error instanceof RpcError && error.code === ErrorCodes.ChainMismatch)) {
      this.state = 'fork';
      log.error('FORK: the cloud holds a different chain for this machine; pushing stopped and neither side is changed', {
        url,
        machine: store.machineId,
        detail: message,
      });
      return null;
    }
    if (isAuthFailure(error)) {
      if (this.state !== 'auth_failed') log.error('the cloud refused the token; nothing is pushed, retrying slowly', { url, error: message });
      this.state = 'auth_failed';
      return retryMaxMs;
    }
    if (this.state !== 'offline') log.warn('cloud unreachable; records stay queued here', { url, error: message });
    this.state = 'offline';
    // A StorageFailure names how long the endpoint's storage needs: wait at least that.
    const retryAfterMs = error instanceof RpcError && error.code === ErrorCodes.StorageFailure ? (error.data as { retry_after_ms?: unknown } | undefined)?.retry_after_ms : undefined;
    return Math.max(backoffDelay(this.failures++, retryMaxMs), typeof retryAfterMs === 'number' ? retryAfterMs : 0);
  }

  private async pause(ms: number): Promise<void> {
    this.nextRetryAt = Date.now() + ms;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.endPause = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.endPause = null;
    this.nextRetryAt = null;
  }

  private wake(): void {
    const wakeLoop = this.wakeLoop;
    this.wakeLoop = null;
    wakeLoop?.();
  }

  private oldestUnackedAgeMs(): number {
    try {
      const [oldest] = this.options.store.recordsAfter(this.acked.seq, 1, 0);
      return oldest ? Math.max(0, Math.round(Date.now() - oldest.ts * 1000)) : 0;
    } catch {
      return 0; // trimmed before acknowledgement: reported through last_error by the push loop
    }
  }
}

function describe(error: unknown): string {
  if (error instanceof RpcError && error.code === ErrorCodes.ChainMismatch) {
    const data = error.data as { reason?: string; seq?: number; acked_seq?: number } | undefined;
    return `${error.message} (${data?.reason ?? 'mismatch'} at seq ${data?.seq}; the cloud holds up to seq ${data?.acked_seq})`;
  }
  return error instanceof Error ? error.message : String(error);
}
