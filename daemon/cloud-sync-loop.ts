import type { CloudHead } from '../protocol/cloud-methods.js';
import type { CloudStatus } from '../protocol/methods.js';
import { GENESIS_HASH, type ChainPoint, type ChainRecord } from '../protocol/records.js';
import { log } from '../node/log.js';
import { backoffDelay } from './backoff.js';
import { CloudCursor } from './cloud-cursor.js';
import { CloudFailure, type CloudLink } from './cloud-link.js';
import { CLOUD_BATCH_BYTES, CLOUD_BATCH_RECORDS } from './settings.js';
import type { Lifecycle } from './lifecycle.js';

/** The status shown when no cloud is configured. */
export function disabledCloudStatus(): CloudStatus {
  return { state: 'disabled', url: null, queued: 0, acked_seq: 0, lag_ms: 0, last_error: null, next_retry_at: null, restore: null };
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
  /** Where the cloud is, for status and logs. */
  url: string;
  /** Opens a new link to the cloud; each failure of it rejects with a CloudFailure. */
  connect: () => Promise<CloudLink>;
  retryMaxMs: number;
  dataDir: string;
}

/** This machine's chain and the cloud's differ; pushing would either fail or hide it. */
class ForkDetected extends Error {}

/** The cloud acknowledged something this daemon did not send it: believing it would trim unstored tasks. */
class AckRefused extends Error {}

/**
 * Pushes every committed record to the cloud exactly once, in order: on connect it asks `head`,
 * checks that the cloud holds a prefix of the local chain, then pushes whatever lies above, and
 * again right after each commit (one push in flight; commits during it go in the next batch).
 * An acknowledgement counts only when it names a record that was pushed, by its hash.
 * Failures retry forever with capped, jittered backoff; a fork stops pushing for good.
 */
export class CloudSync implements Lifecycle {
  private state: CloudStatus['state'] = 'connecting';
  private acked: ChainPoint;
  private lastError: string | null = null;
  private nextRetryAt: number | null = null;
  private failures = 0;
  private stopped = false;
  private link: CloudLink | null = null;
  private wakeLoop: (() => void) | null = null;
  private endPause: (() => void) | null = null;
  private running: Promise<void> | null = null;
  private stopListening: (() => void) | null = null;
  private readonly cursor: CloudCursor;

  constructor(private readonly options: CloudSyncOptions) {
    this.cursor = new CloudCursor(options.dataDir);
    this.acked = this.cursor.load() ?? { seq: 0, hash: GENESIS_HASH };
  }

  async start(): Promise<void> {
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
    this.link?.close();
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
    const { store } = this.options;
    const link = await this.options.connect();
    this.link = link;
    void link.ended.then(() => this.wake());
    try {
      if (this.stopped) return;
      this.acknowledge(this.checkedHead(await link.head(store.machineId)));
      // After a refused acknowledgement only a good one says the cloud is back to its word.
      if (this.state !== 'refused_ack') this.markOnline();
      while (!this.stopped) {
        if (link.failure) throw link.failure;
        const batch = store.recordsAfter(this.acked.seq, CLOUD_BATCH_RECORDS, CLOUD_BATCH_BYTES);
        if (batch.length === 0) {
          this.markOnline();
          await new Promise<void>((resolve) => (this.wakeLoop = resolve));
          continue;
        }
        this.acknowledge(this.checkedAck(await link.push(store.machineId, batch), batch));
        this.markOnline();
      }
    } finally {
      link.close();
      this.link = null;
    }
  }

  /** The cloud must hold a prefix of the local chain: not more records, and the same hash at its head. */
  private checkedHead(cloud: CloudHead): ChainPoint {
    const { store } = this.options;
    const point = chainPointOf(cloud, 'head');
    const local = store.head;
    if (point.seq > local.seq) {
      throw new ForkDetected(`the cloud holds ${point.seq} records for machine ${store.machineId}, this daemon only ${local.seq}`);
    }
    if (point.seq === 0) return point;
    const localHash = store.hashAt(point.seq);
    // An unknown local hash (trimmed past the anchor) is checked by the cloud on the next push instead.
    if (localHash !== undefined && localHash !== point.hash) {
      throw new ForkDetected(`seq ${point.seq} has hash ${point.hash} in the cloud but ${localHash} here`);
    }
    return point;
  }

  /** A push's acknowledgement, refused unless it names a record up to the last one pushed, with that record's hash. */
  private checkedAck(ack: CloudHead, pushed: ChainRecord[]): ChainPoint {
    const point = chainPointOf(ack, 'push');
    const lastPushed = pushed[pushed.length - 1].seq;
    if (point.seq > lastPushed) {
      throw new AckRefused(`the cloud acknowledged seq ${point.seq}, but it was sent records up to seq ${lastPushed} only`);
    }
    if (point.seq === 0) return point;
    const expected = pushed[point.seq - pushed[0].seq]?.hash ?? this.options.store.hashAt(point.seq);
    if (expected === undefined) {
      // Trimmed here, so acknowledged before: moving the cursor back only holds more.
      if (point.seq <= this.acked.seq) return point;
      throw new AckRefused(`the cloud acknowledged seq ${point.seq}, a record this daemon cannot check`);
    }
    if (expected !== point.hash) {
      throw new AckRefused(`the cloud acknowledged seq ${point.seq} with head hash ${point.hash}, but that record's hash is ${expected}`);
    }
    return point;
  }

  private markOnline(): void {
    if (this.state !== 'online') {
      const { store, url } = this.options;
      log.info('cloud sync online', { url, acked_seq: this.acked.seq, queued: store.head.seq - this.acked.seq });
    }
    this.state = 'online';
    this.lastError = null;
    this.failures = 0;
  }

  private acknowledge(point: ChainPoint): void {
    if (point.seq === this.acked.seq && point.hash === this.acked.hash) return; // nothing new: no cursor write
    this.acked = point;
    this.options.store.holdUnackedAbove(point.seq);
    this.cursor.save(point);
  }

  /** Records the failure; returns how long to wait before the next attempt, or null to stop for good. */
  private afterFailure(error: unknown): number | null {
    const { url, store, retryMaxMs } = this.options;
    const message = error instanceof Error ? error.message : String(error);
    this.lastError = message;
    if (error instanceof ForkDetected || (error instanceof CloudFailure && error.kind === 'chain_mismatch')) {
      this.state = 'fork';
      log.error('FORK: the cloud holds a different chain for this machine; pushing stopped and neither side is changed', {
        url,
        machine: store.machineId,
        detail: message,
      });
      return null;
    }
    if (error instanceof AckRefused) {
      this.state = 'refused_ack';
      log.error('refused the cloud\'s acknowledgement: nothing is marked as stored in the cloud and nothing is trimmed for it; retrying', {
        url,
        acked_seq: this.acked.seq,
        detail: message,
      });
      return backoffDelay(this.failures++, retryMaxMs);
    }
    if (error instanceof CloudFailure && error.kind === 'auth') {
      if (this.state !== 'auth_failed') log.error('the cloud refused the token; nothing is pushed, retrying slowly', { url, error: message });
      this.state = 'auth_failed';
      return retryMaxMs;
    }
    if (this.state !== 'offline') log.warn('cloud unreachable; records stay queued here', { url, error: message });
    this.state = 'offline';
    const delay = backoffDelay(this.failures++, retryMaxMs);
    // A cloud whose database is down says when to come back; sooner would only add to its load.
    return error instanceof CloudFailure && error.retryAfterMs !== null ? Math.max(delay, error.retryAfterMs) : delay;
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

/** The cloud's {acked_seq, head_hash} as a chain point; anything else is refused, naming the call. */
function chainPointOf(answer: CloudHead, call: 'head' | 'push'): ChainPoint {
  const { acked_seq: seq, head_hash: hash } = (answer ?? {}) as Partial<CloudHead>;
  if (seq === 0 && hash === null) return { seq: 0, hash: GENESIS_HASH };
  if (Number.isSafeInteger(seq) && (seq as number) > 0 && typeof hash === 'string') return { seq: seq as number, hash };
  throw new AckRefused(`the cloud answered ${call} with ${JSON.stringify(answer)?.slice(0, 200)}, not {acked_seq, head_hash}`);
}
