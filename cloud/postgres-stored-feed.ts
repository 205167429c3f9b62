import { EventEmitter } from 'node:events';
import pg from 'pg';
import type { StoredEvent } from '../protocol/fleet-api.js';
import { log } from '../node/log.js';

/**
 * The live feed of stored pushes across every endpoint process on one database: each endpoint
 * gathers the events of the pushes it stored and NOTIFYs them together every FLUSH_MS, and LISTENs
 * for every endpoint's. A NOTIFY inside the push transaction would take PostgreSQL's one notify
 * lock at every commit and hold it through the commit's WAL flush, putting every push in a single
 * line: about 30 % of the fleet bench's throughput (bench scenario 7, interleaved runs). The feed
 * is live, not a replay: an event gathered when its endpoint dies, or refused by a busy database,
 * is not sent.
 */
const CHANNEL = 'taskhistory_stored';
const FLUSH_MS = 100;
/** PostgreSQL refuses a NOTIFY payload of 8000 bytes or more. */
const MAX_PAYLOAD_BYTES = 7900;
const LISTEN_RETRY_MS = 1000;

export class PostgresStoredFeed {
  private readonly events = new EventEmitter();
  private pending: StoredEvent[] = [];
  private flushTimer: NodeJS.Timeout | null = null;
  private listener: pg.Client | null = null;
  private closed = false;

  constructor(
    private readonly pool: pg.Pool,
    private readonly clientConfig: pg.ClientConfig,
    private readonly database: string,
  ) {
    this.events.setMaxListeners(0);
  }

  /** Queues the event of a push just committed; it goes out with the others of the next FLUSH_MS. */
  publish(event: StoredEvent): void {
    this.pending.push(event);
    this.flushTimer ??= setTimeout(() => void this.flush(), FLUSH_MS).unref();
  }

  watch(listener: (event: StoredEvent) => void): () => void {
    this.events.on('stored', listener);
    return () => this.events.off('stored', listener);
  }

  /** A dedicated connection LISTENing for every endpoint's events; reconnects while the feed is open. */
  async listen(): Promise<void> {
    const client = new pg.Client(this.clientConfig);
    const retry = () => {
      if (this.listener !== client || this.closed) return;
      this.listener = null;
      setTimeout(() => this.listen().catch(retry), LISTEN_RETRY_MS).unref();
    };
    client.on('error', (error) => log.warn('the live feed lost its database connection; reconnecting', { database: this.database, error: error.message }));
    client.on('end', retry);
    client.on('notification', (message) => {
      if (message.channel !== CHANNEL || !message.payload) return;
      for (const event of JSON.parse(message.payload) as StoredEvent[]) this.events.emit('stored', event);
    });
    this.listener = client;
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANNEL}`);
    } catch (error) {
      await client.end().catch(() => undefined);
      throw error;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.flushTimer) clearTimeout(this.flushTimer);
    await this.listener?.end().catch(() => undefined);
  }

  private async flush(): Promise<void> {
    this.flushTimer = null;
    const events = this.pending;
    this.pending = [];
    if (this.closed || events.length === 0) return;
    try {
      await this.pool.query('SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload', [CHANNEL, payloadsOf(events)]);
    } catch (error) {
      log.warn('the live feed could not send its events; live viewers miss them', { database: this.database, events: events.length, error: (error as Error).message });
    }
  }
}

/** JSON arrays of events, each within a NOTIFY payload's limit (the events are ASCII). */
function payloadsOf(events: StoredEvent[]): string[] {
  const payloads: string[] = [];
  let part: string[] = [];
  let bytes = 2;
  for (const event of events) {
    const text = JSON.stringify(event);
    if (part.length && bytes + text.length + 1 > MAX_PAYLOAD_BYTES) {
      payloads.push(`[${part.join(',')}]`);
      part = [];
      bytes = 2;
    }
    part.push(text);
    bytes += text.length + 1;
  }
  if (part.length) payloads.push(`[${part.join(',')}]`);
  return payloads;
}
