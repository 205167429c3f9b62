import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';
import { CLOUD_SYNC_PATH } from '../protocol/cloud-methods.js';
import { DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_TASKS } from '../protocol/limits.js';
import { log } from '../node/log.js';
import { RpcDispatcher } from '../node/rpc-dispatch.js';
import { ConsoleAssets } from './console-assets.js';
import type { CloudStorage } from './storage.js';
import { registerSyncMethods } from './sync-methods.js';
import { TaskHistoryBuilder } from './task-history-view.js';
import { readRefusal, type Principal, type TokenRegistry } from './tokens.js';

/** Records read per storage call while building a task view. */
const VIEW_READ_BATCH = 5000;
const VIEW_READ_BYTES = 16 * 1024 * 1024;
/** A client that misses one ping interval's pong is gone (half-open TCP); its socket is dropped. */
const HEARTBEAT_MS = 30_000;

const TASK_HISTORY_ROUTE = /^\/v1\/machines\/([^/]+)\/task_history\.json$/;

export interface CloudServerOptions {
  storage: CloudStorage;
  tokens: TokenRegistry;
  host: string;
  port: number;
}

/**
 * The endpoint on one HTTP server: JSON-RPC over WebSocket at /v1/sync (the bearer token checked
 * before the upgrade) and the read-only task view over plain HTTP.
 */
export class CloudServer {
  private readonly http: Server;
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: DEFAULT_MAX_MESSAGE_BYTES });
  private readonly endpoint = new RpcDispatcher<Principal>(log);
  private readonly alive = new WeakSet<WebSocket>();
  private heartbeat: NodeJS.Timeout | undefined;
  private readonly consoleAssets = ConsoleAssets.load();

  constructor(private readonly options: CloudServerOptions) {
    registerSyncMethods(this.endpoint, options.storage);
    this.http = createServer((req, res) => {
      this.serveHttp(req, res).catch((error: unknown) => {
        log.error('HTTP request failed', { url: req.url, error: (error as Error).message });
        if (!res.headersSent) sendJson(res, 500, { error: 'internal error' });
        else res.destroy();
      });
    });
    this.http.on('upgrade', (req, socket, head) => this.upgrade(req, socket, head));
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
    const { address, port } = this.http.address() as AddressInfo;
    return `ws://${address.includes(':') ? `[${address}]` : address}:${port}${CLOUD_SYNC_PATH}`;
  }

  async close(): Promise<void> {
    clearInterval(this.heartbeat);
    const closed = new Promise<void>((resolve) => this.http.close(() => resolve()));
    for (const client of this.wss.clients) client.terminate();
    this.http.closeAllConnections();
    await closed;
  }

  private upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => undefined);
    if (new URL(req.url ?? '/', 'http://endpoint').pathname !== CLOUD_SYNC_PATH) {
      return refuseUpgrade(socket, 404, 'Not Found');
    }
    const principal = this.options.tokens.principalFor(req.headers.authorization);
    if (!principal) return refuseUpgrade(socket, 401, 'Unauthorized');
    this.wss.handleUpgrade(req, socket, head, (ws) => this.serveSocket(ws, principal));
  }

  private serveSocket(ws: WebSocket, principal: Principal): void {
    this.alive.add(ws);
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

  private async serveHttp(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://endpoint');
    if (ConsoleAssets.claims(url.pathname)) return this.consoleAssets.serve(req, res, url.pathname);
    const route = TASK_HISTORY_ROUTE.exec(url.pathname);
    if (!route) return sendJson(res, 404, { error: `no such resource: ${url.pathname}` });
    if (req.method !== 'GET') return sendJson(res, 405, { error: 'only GET is served here' }, { allow: 'GET' });
    const principal = this.options.tokens.principalFor(req.headers.authorization);
    if (!principal) {
      return sendJson(res, 401, { error: 'missing or unknown bearer token' }, { 'www-authenticate': 'Bearer' });
    }
    const machineId = decodedSegment(route[1]);
    if (machineId === null) return sendJson(res, 400, { error: `the machine id in ${url.pathname} is not valid percent-encoding` });
    const refusal = readRefusal(principal, machineId);
    if (refusal) return sendJson(res, 403, { error: refusal });
    const maxTasksText = url.searchParams.get('max_tasks');
    const maxTasks = maxTasksText === null ? DEFAULT_MAX_TASKS : Number(maxTasksText);
    if (!Number.isSafeInteger(maxTasks) || maxTasks < 1) {
      return sendJson(res, 400, { error: `max_tasks must be a positive integer, not ${JSON.stringify(maxTasksText)}` });
    }
    const { storage } = this.options;
    if (!(await storage.knows(machineId))) return sendJson(res, 404, { error: `no records for machine ${machineId}` });
    const view = new TaskHistoryBuilder(maxTasks);
    for (let afterSeq = 0; ; ) {
      const records = await storage.read(machineId, afterSeq, VIEW_READ_BATCH, VIEW_READ_BYTES);
      if (records.length === 0) break;
      for (const record of records) view.add(record);
      afterSeq = records[records.length - 1].seq;
    }
    sendJson(res, 200, view.result());
  }
}

function decodedSegment(segment: string): string | null {
  try {
    return decodeURIComponent(segment);
  } catch {
    return null;
  }
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function refuseUpgrade(socket: Duplex, status: number, reason: string): void {
  const extra = status === 401 ? 'WWW-Authenticate: Bearer\r\n' : '';
  socket.end(`HTTP/1.1 ${status} ${reason}\r\n${extra}Connection: close\r\nContent-Length: 0\r\n\r\n`);
}
