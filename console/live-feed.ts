import { createParser } from 'eventsource-parser';
import type { StoredEvent } from '../protocol/fleet-api.js';
import { Unauthorized } from './api.js';
import { FLEET_PATHS } from './fleet-contract.js';

export type { StoredEvent };

export type FeedState = 'connecting' | 'live' | 'reconnecting';

const FIRST_RETRY_MS = 250;
const MAX_RETRY_MS = 5_000;

/**
 * Reads the endpoint's Server-Sent Events with fetch() and a stream reader, since EventSource
 * cannot send the Authorization header. Reconnects by itself with backoff, for ever, until
 * stopped or the token is refused (401).
 */
export class LiveFeed {
  private readonly abort = new AbortController();
  private retryMs = FIRST_RETRY_MS;

  constructor(
    private readonly headers: Record<string, string>,
    private readonly onStored: (event: StoredEvent) => void,
    private readonly onState: (state: FeedState) => void,
    private readonly onUnauthorized: (error: Unauthorized) => void,
  ) {
    void this.run();
  }

  stop(): void {
    this.abort.abort();
  }

  private async run(): Promise<void> {
    while (!this.abort.signal.aborted) {
      try {
        await this.readOnce();
      } catch (error) {
        if (error instanceof Unauthorized) return this.onUnauthorized(error);
        // A network error or an endpoint restart: try again below.
      }
      if (this.abort.signal.aborted) return;
      this.onState('reconnecting');
      await new Promise((resolve) => setTimeout(resolve, this.retryMs));
      this.retryMs = Math.min(this.retryMs * 2, MAX_RETRY_MS);
    }
  }

  private async readOnce(): Promise<void> {
    this.onState('connecting');
    const response = await fetch(FLEET_PATHS.events, {
      headers: { ...this.headers, accept: 'text/event-stream' },
      cache: 'no-store',
      signal: this.abort.signal,
    });
    if (response.status === 401) throw new Unauthorized('The endpoint refused this token on its live feed: it is wrong or has been revoked.');
    if (!response.ok || !response.body) throw new Error(`/v1/events answered ${response.status}`);
    this.retryMs = FIRST_RETRY_MS;
    this.onState('live');
    const parser = createParser({
      onEvent: (message) => {
        if (message.event === 'stored') this.onStored(JSON.parse(message.data) as StoredEvent);
      },
    });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      parser.feed(value);
    }
  }
}
