import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';
import { CLOUD_SYNC_PATH } from '../protocol/cloud-methods.js';
import { DEFAULT_MAX_MESSAGE_BYTES } from '../protocol/limits.js';
import { parserErrorStatus, refuseHttp, requestTarget } from '../node/http-refusal.js';
import { log } from '../node/log.js';
import { RpcDispatcher } from '../node/rpc-dispatch.js';
import { HttpRoutes } from './http-routes.js';
import { CloudMetrics } from './metrics.js';
import { RevocationWatch } from './revocation-watch.js';
import { ConsoleAssets } from './console-assets.js';
import type { CloudStorage } from './storage.js';
import { registerSyncMethods } from './sync-methods.js';
import { AuthUnavailable, type Authenticated, type Authenticator, type Principal } from './tokens.js';

/** A client that misses one ping interval's pong is gone (half-open TCP); its socket is dropped. */
const HEARTBEAT_MS = 30_000;
/** Slowloris bounds: the headers must arrive within HEADERS_TIMEOUT_MS, the whole request within REQUEST_TIMEOUT_MS. */
const HEADERS_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 30_000;
/** How often Node checks those two timeouts. */
const TIMEOUT_CHECK_MS = 1000;
/** WebSocket close code when the connection's token is revoked (1008: policy violation). */
const CLOSE_TOKEN_REVOKED = 1008;

export interface CloudServerOptions {
  storage: CloudStorage;
  authenticator: Authenticator;
  host: string;
  port: number;
}

/**
 * The endpoint on one HTTP server: JSON-RPC over WebSocket at /v1/sync (the bearer token checked
 * before the upgrade) and plain-HTTP GETs (http-routes.ts). No request may take the process down:
 * every handler answers 4xx/5xx or closes the socket.
 */
export class CloudServer {
  private readonly http: Server;
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: DEFAULT_MAX_MESSAGE_BYTES });
  private readonly endpoint = new RpcDispatcher<Principal>(log);
  private readonly alive = new WeakSet<WebSocket>();
  private readonly metrics: CloudMetrics;
  private readonly revocations: RevocationWatch;
  private heartbeat: NodeJS.Timeout | undefined;
  private readonly consoleAssets = ConsoleAssets.load();

  constructor(private readonly options: CloudServerOptions) {
    this.metrics = new CloudMetrics(options.storage);
    this.revocations = new RevocationWatch(options.authenticator);
    registerSyncMethods(this.endpoint, options.storage, this.metrics);
    const routes = new HttpRoutes({ ...options, metrics: this.metrics, revocations: this.revocations });
    this.http = createServer(
      { headersTimeout: HEADERS_TIMEOUT_MS, requestTimeout: REQUEST_TIMEOUT_MS, connectionsCheckingInterval: TIMEOUT_CHECK_MS },
      (req, res) => void (ConsoleAssets.claims(req.url) ? this.consoleAssets.serve(req, res) : routes.serve(req, res)),
    );
    this.http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      this.upgrade(req, socket, head).catch((error: unknown) => {
        log.error('could not answer an upgrade', { error: (error as Error).message });
        socket.destroy();
      });
    });
    this.http.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => refuseHttp(socket, parserErrorStatus(error)));
  }

  /** Listens and returns the WebSocket sync URL. */
  async listen(): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.http.once('error', reject);
      this.http.listen(this.options.port, this.options.host, () => {
        this.http.off('error', reject);
        resolve();
      });
    });
    this.heartbeat = setInterval(() => this.pingClients(), HEARTBEAT_MS).unref();
    this.revocations.start();
    const { address, port } = this.http.address() as AddressInfo;
    return `ws://${address.includes(':') ? `[${address}]` : address}:${port}${CLOUD_SYNC_PATH}`;
  }

  async close(): Promise<void> {
    clearInterval(this.heartbeat);
    this.revocations.stop();
    const closed = new Promise<void>((resolve) => this.http.close(() => resolve()));
    for (const client of this.wss.clients) client.terminate();
    this.http.closeAllConnections();
    await closed;
  }

  private async upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on('error', () => undefined);
    const target = requestTarget(req.url);
    if (!target) return refuseHttp(socket, 400);
    if (target.pathname !== CLOUD_SYNC_PATH) return refuseHttp(socket, 404);
    let caller: Authenticated | null;
    try {
      caller = await this.options.authenticator.authenticate(req.headers.authorization);
    } catch (error) {
      if (!(error instanceof AuthUnavailable)) throw error;
      // Never 401 here: that would tell a daemon its token is bad.
      log.warn('could not check a token; the upgrade is answered 503', { error: error.message });
      return refuseHttp(socket, 503, '', { 'Retry-After': String(Math.ceil(error.retryAfterMs / 1000)) });
    }
    if (!caller) return refuseHttp(socket, 401, '', { 'WWW-Authenticate': 'Bearer' });
    if (socket.destroyed) return;
    const authenticated = caller;
    this.wss.handleUpgrade(req, socket, head, (ws) => this.serveSocket(ws, authenticated));
  }

  private serveSocket(ws: WebSocket, { principal, tokenId }: Authenticated): void {
    this.alive.add(ws);
    this.metrics.connections.inc();
    const untrack = this.revocations.track(tokenId, () => ws.close(CLOSE_TOKEN_REVOKED, 'token revoked'));
    ws.once('close', () => {
      this.metrics.connections.dec();
      untrack();
    });
    // Without a handler, an oversize or malformed frame would crash the process.
    ws.on('error', (error) => log.warn('sync connection error', { error: error.message }));
    ws.on('pong', () => this.alive.add(ws));
    ws.on('message', (data) => {
      this.endpoint.handleText(data.toString(), principal).then(
        (response) => {
          if (response !== null && ws.readyState === WebSocket.OPEN) ws.send(response);
        },
        (error: unknown) => log.error('could not answer a message', { error: (error as Error).message }),
      );
    });
  }

  private pingClients(): void {
    for (const ws of this.wss.clients) {
      if (!this.alive.has(ws)) {
        ws.terminate();
        continue;
      }
      this.alive.delete(ws);
      ws.ping();
    }
  }
}
