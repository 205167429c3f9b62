import WebSocket from 'ws';
import type { MessageTransport } from './rpc-client.js';

/** The WebSocket framing for RpcClient: one JSON-RPC message per text frame. */

export interface WebSocketOpenOptions {
  /** Who answers, for messages: "the daemon on /run/...sock", or the URL. */
  peer: string;
  headers?: Record<string, string>;
  handshakeTimeoutMs: number;
}

/** The WebSocket could not be opened; `errno` is ECONNREFUSED, ENOENT, ETIMEDOUT... or `HTTP <status>`. */
export class WebSocketOpenError extends Error {
  constructor(
    message: string,
    readonly errno: string,
    /** The HTTP status when the server answered the upgrade with something else. */
    readonly httpStatus: number | null = null,
  ) {
    super(message);
    this.name = 'WebSocketOpenError';
  }
}

export class WebSocketTransport implements MessageTransport {
  private constructor(
    private readonly ws: WebSocket,
    private readonly peer: string,
  ) {
    // Errors after the open must not crash the process; 'close' follows each of them.
    ws.on('error', () => undefined);
  }

  static open(url: string, options: WebSocketOpenOptions): Promise<WebSocketTransport> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { headers: options.headers, handshakeTimeout: options.handshakeTimeoutMs });
      const fail = (error: WebSocketOpenError) => {
        ws.removeAllListeners();
        ws.on('error', () => undefined);
        ws.terminate();
        reject(error);
      };
      ws.once('error', (error: Error & { code?: string }) => {
        const errno = error.code ?? (/timed out/i.test(error.message) ? 'ETIMEDOUT' : error.message);
        fail(new WebSocketOpenError(`cannot connect to ${options.peer}: ${error.message}`, errno));
      });
      ws.once('unexpected-response', (request, response) => {
        const status = response.statusCode ?? 0;
        response.resume();
        request.destroy();
        fail(new WebSocketOpenError(`${options.peer} answered HTTP ${status} instead of accepting a WebSocket`, `HTTP ${status}`, status));
      });
      ws.once('open', () => {
        ws.removeAllListeners();
        resolve(new WebSocketTransport(ws, options.peer));
      });
    });
  }

  send(text: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.ws.send(text, (error) => (error ? reject(new Error(`could not send to ${this.peer}: ${error.message}`)) : resolve()));
    });
  }

  onMessage(listener: (text: string) => void): void {
    this.ws.on('message', (data) => listener(data.toString()));
  }

  onClose(listener: (reason: string) => void): void {
    this.ws.once('close', (code, reason) =>
      listener(`the connection to ${this.peer} closed (code ${code}${reason.length > 0 ? `: ${reason.toString()}` : ''})`),
    );
  }

  /** Whether the connection has fully ended. */
  get ended(): boolean {
    return this.ws.readyState === WebSocket.CLOSED;
  }

  /** Closes with the closing handshake; resolves once closed. */
  close(): Promise<void> {
    if (this.ended) return Promise.resolve();
    return new Promise((resolve) => {
      this.ws.once('close', () => resolve());
      this.ws.close();
    });
  }

  /** Drops the connection at once (a peer that stopped answering gets no handshake). */
  terminate(): void {
    this.ws.terminate();
  }
}
