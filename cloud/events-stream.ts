import type { IncomingMessage, ServerResponse } from 'node:http';
import type { StoredEvent } from '../protocol/fleet-api.js';
import type { RevocationWatch } from './revocation-watch.js';
import type { CloudStorage } from './storage.js';
import { readRefusal, type Authenticated } from './tokens.js';

/** A comment line this often keeps idle proxies and the browser's reader from taking the stream for dead. */
const KEEPALIVE_MS = 15_000;
/** What a browser waits before reconnecting when the stream ends (its own reader may wait longer). */
const RETRY_MS = 1_000;
/** A client this far behind is not reading: it is dropped rather than buffered without bound. */
const MAX_BUFFERED_BYTES = 1024 * 1024;

/**
 * GET /v1/events: Server-Sent Events, one `stored` event for every push the caller may read
 * (`{machine_id, first_seq, last_seq}`), whichever endpoint process took the push (the storage's
 * watchStored), until the client leaves or its token is revoked.
 */
export function streamStoredEvents(
  req: IncomingMessage,
  res: ServerResponse,
  caller: Authenticated,
  options: { storage: CloudStorage; revocations: RevocationWatch },
): void {
  res.writeHead(200, {
    // SSE is UTF-8 by definition: no charset parameter.
    'content-type': 'text/event-stream',
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    // A buffering reverse proxy (nginx) would hold events back until its buffer fills.
    'x-accel-buffering': 'no',
    connection: 'keep-alive',
  });
  res.write(`retry: ${RETRY_MS}\n: stored events follow\n\n`);
  const send = (text: string) => {
    if (res.writableLength > MAX_BUFFERED_BYTES) res.destroy();
    else res.write(text);
  };
  const unsubscribe = options.storage.watchStored((event: StoredEvent) => {
    if (readRefusal(caller.principal, event.machine_id) === null) send(`event: stored\ndata: ${JSON.stringify(event)}\n\n`);
  });
  const keepalive = setInterval(() => send(': keepalive\n\n'), KEEPALIVE_MS).unref();
  // Ended, not destroyed: the client reconnects, and hears 401.
  const untrack = options.revocations.track(caller.tokenId, () => res.end());
  req.socket.once('close', () => {
    unsubscribe();
    clearInterval(keepalive);
    untrack();
  });
}
