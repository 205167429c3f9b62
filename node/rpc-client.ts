import { createJSONRPCErrorResponse, JSONRPCClient, JSONRPCErrorException, type JSONRPCResponse } from 'json-rpc-2.0';
import { RpcError } from '../protocol/errors.js';

/**
 * The one JSON-RPC 2.0 client of the project (SDK, CLI, the daemon's cloud link), on json-rpc-2.0's
 * JSONRPCClient: its request map, per-call timeout and rejectAllPendingRequests. String ids only,
 * since the library never resolves a string id answered as a number. A call rejects with
 * RpcError (the peer answered an error), RpcTimeoutError or RpcConnectionError.
 */

/** What a framing (WebSocket, newline-delimited JSON...) offers the client: one message is one JSON text. */
export interface MessageTransport {
  /** Resolves once the message is handed to the OS; rejects when the connection cannot take it. */
  send(text: string): Promise<void>;
  onMessage(listener: (text: string) => void): void;
  /** Called once when the connection has ended, with a sentence saying how. */
  onClose(listener: (reason: string) => void): void;
}

/** No answer came within the call's timeout. The request was sent: the peer may still act on it. */
export class RpcTimeoutError extends Error {
  constructor(
    readonly method: string,
    readonly timeoutMs: number,
    peer: string,
  ) {
    super(`${peer} did not answer ${method} within ${timeoutMs} ms`);
    this.name = 'RpcTimeoutError';
  }
}

/** The connection ended (or refused the message) before the call was answered. */
export class RpcConnectionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RpcConnectionError';
  }
}

/** The library reports timeouts, closes and send failures all with code 0; this marks our timeouts. */
const TIMED_OUT = Symbol('timed out');
/** The library's code for failures it makes up itself (timeouts, closes, send failures). */
const LOCAL_FAILURE_CODE = 0;

export type NotificationListener = (method: string, params: unknown) => void;

export class RpcClient {
  private readonly client: JSONRPCClient;
  private nextId = 1;
  private closedReason: string | null = null;

  constructor(
    transport: MessageTransport,
    /** Who answers, for messages: "the daemon on /run/...sock", "ws://host/v1/sync". */
    readonly peer: string,
    private readonly onNotification: NotificationListener = () => undefined,
  ) {
    this.client = new JSONRPCClient((payload: unknown) => transport.send(JSON.stringify(payload)), () => String(this.nextId++));
    transport.onMessage((text) => this.receive(text));
    transport.onClose((reason) => {
      this.closedReason = reason;
      this.client.rejectAllPendingRequests(reason);
    });
  }

  /** Why the connection ended, or null while it is open. */
  get closed(): string | null {
    return this.closedReason;
  }

  async request(method: string, params: unknown, timeoutMs: number): Promise<unknown> {
    if (this.closedReason !== null) throw new RpcConnectionError(this.closedReason);
    const timed = this.client.timeout(timeoutMs, (id) => createJSONRPCErrorResponse(id, LOCAL_FAILURE_CODE, 'timeout', TIMED_OUT));
    try {
      return await timed.request(method, params as Record<string, unknown>);
    } catch (error) {
      if (!(error instanceof JSONRPCErrorException)) throw error;
      if (error.data === TIMED_OUT) throw new RpcTimeoutError(method, timeoutMs, this.peer);
      if (error.code === LOCAL_FAILURE_CODE) throw new RpcConnectionError(error.message);
      throw new RpcError(error.code, error.message, error.data);
    }
  }

  /** Feeds one message from the peer: a response, a batch of responses, or a notification. */
  private receive(text: string): void {
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch {
      return; // not JSON: no call it could answer
    }
    for (const item of Array.isArray(message) ? message : [message]) {
      if (item === null || typeof item !== 'object') continue;
      const { id, method, params } = item as { id?: unknown; method?: unknown; params?: unknown };
      if (typeof method === 'string' && id === undefined) this.onNotification(method, params);
      else if (typeof id === 'string') this.client.receive(item as JSONRPCResponse);
    }
  }
}
