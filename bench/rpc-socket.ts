import { connect } from 'node:net';
import WebSocket from 'ws';
import { socketUrl } from '../protocol/paths.js';
import { onLines } from './line-framing.js';

/** How messages are framed on the Unix socket: WebSocket messages, or one JSON text a line. */
export type Framing = 'websocket' | 'newline';

/** The little a client needs of a connection, whatever its framing. */
interface MessageChannel {
  send(text: string): void;
  close(): void;
}

/**
 * A bare JSON-RPC 2.0 client on a Unix socket, as lean as the load generator can make it: params
 * are serialized by the caller (or here, once), requests are pipelined, and each answer resolves
 * its request by numeric id. No SDK, so the client costs the same for every server.
 */
export class RpcSocket {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (result: unknown) => void; reject: (error: Error) => void }>();
  private notificationHandler: ((method: string, params: unknown) => void) | null = null;
  private closedError: Error | null = null;

  private channel!: MessageChannel;

  private constructor(readonly socketPath: string) {}

  static open(socketPath: string, framing: Framing = 'websocket'): Promise<RpcSocket> {
    const client = new RpcSocket(socketPath);
    return framing === 'websocket' ? client.openWebSocket() : client.openNewline();
  }

  private openWebSocket(): Promise<RpcSocket> {
    const ws = new WebSocket(socketUrl(this.socketPath), { perMessageDeflate: false });
    this.channel = { send: (text) => ws.send(text), close: () => ws.close() };
    ws.on('message', (data) => this.receive(data.toString()));
    ws.on('close', (code) => this.failAll(new Error(`socket ${this.socketPath} closed (code ${code}) with requests still waiting`)));
    return new Promise((resolve, reject) => {
      ws.once('open', () => {
        ws.on('error', (error) => this.failAll(new Error(`socket ${this.socketPath}: ${error.message}`)));
        resolve(this);
      });
      ws.once('error', (error) => reject(new Error(`cannot connect to ${this.socketPath}: ${error.message}`)));
    });
  }

  private openNewline(): Promise<RpcSocket> {
    const socket = connect(this.socketPath);
    socket.setNoDelay(true);
    this.channel = { send: (text) => socket.write(`${text}\n`), close: () => socket.end() };
    onLines(socket, (line) => this.receive(line));
    socket.on('close', () => this.failAll(new Error(`socket ${this.socketPath} closed with requests still waiting`)));
    return new Promise((resolve, reject) => {
      socket.once('connect', () => {
        socket.on('error', (error) => this.failAll(new Error(`socket ${this.socketPath}: ${error.message}`)));
        resolve(this);
      });
      socket.once('error', (error) => reject(new Error(`cannot connect to ${this.socketPath}: ${error.message}`)));
    });
  }

  /** Sends one request whose params are already JSON text; resolves with its result. */
  callRaw(method: string, paramsJson: string): Promise<unknown> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId++;
    this.channel.send(`{"jsonrpc":"2.0","id":${id},"method":"${method}","params":${paramsJson}}`);
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
    this.channel.close();
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
