import WebSocket from 'ws';
import { socketUrl } from '../protocol/paths.js';

/**
 * A bare JSON-RPC 2.0 client over WebSocket on a Unix socket, as lean as the load generator can
 * make it: params are serialized by the caller (or here, once), requests are pipelined, and each
 * answer resolves its request by numeric id. No SDK, so the client costs the same for every server.
 */
export class RpcSocket {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (result: unknown) => void; reject: (error: Error) => void }>();
  private notificationHandler: ((method: string, params: unknown) => void) | null = null;
  private closedError: Error | null = null;

  private constructor(
    private readonly ws: WebSocket,
    readonly socketPath: string,
  ) {
    ws.on('message', (data) => this.receive(data.toString()));
    ws.on('error', (error) => this.failAll(new Error(`socket ${socketPath}: ${error.message}`)));
    ws.on('close', (code) => this.failAll(new Error(`socket ${socketPath} closed (code ${code}) with requests still waiting`)));
  }

  static open(socketPath: string): Promise<RpcSocket> {
    const ws = new WebSocket(socketUrl(socketPath), { perMessageDeflate: false });
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new RpcSocket(ws, socketPath)));
      ws.once('error', (error) => reject(new Error(`cannot connect to ${socketPath}: ${error.message}`)));
    });
  }

  /** Sends one request whose params are already JSON text; resolves with its result. */
  callRaw(method: string, paramsJson: string): Promise<unknown> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId++;
    this.ws.send(`{"jsonrpc":"2.0","id":${id},"method":"${method}","params":${paramsJson}}`);
    return new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
  }

  call<T = unknown>(method: string, params: object = {}): Promise<T> {
    return this.callRaw(method, JSON.stringify(params)) as Promise<T>;
  }

  onNotification(handler: (method: string, params: unknown) => void): void {
    this.notificationHandler = handler;
  }

  get waiting(): number {
    return this.pending.size;
  }

  close(): void {
    this.ws.close();
  }

  private receive(text: string): void {
    const message = JSON.parse(text) as { id?: number; method?: string; params?: unknown; result?: unknown; error?: { code: number; message: string } };
    if (message.id === undefined || message.id === null) {
      if (message.method) this.notificationHandler?.(message.method, message.params);
      return;
    }
    const waiter = this.pending.get(message.id);
    if (!waiter) return;
    this.pending.delete(message.id);
    if (message.error) waiter.reject(new Error(`${this.socketPath}: error ${message.error.code}: ${message.error.message}`));
    else waiter.resolve(message.result);
  }

  private failAll(error: Error): void {
    this.closedError ??= error;
    for (const waiter of this.pending.values()) waiter.reject(error);
    this.pending.clear();
  }
}
