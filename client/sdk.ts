import WebSocket from 'ws';
import { ErrorMessages, type ErrorCode } from '../protocol/errors.js';
import {
  EVENT_NOTIFICATION,
  Methods,
  type EventParams,
  type MethodKey,
  type ParamsOf,
  type ResultOf,
} from '../protocol/methods.js';
import { resolveSocketPath, socketUrl } from '../protocol/paths.js';
import { currentPathEnvironment } from '../node/path-environment.js';

export interface ConnectOptions {
  /** Overrides TASKHISTORY_SOCKET and the default socket path. */
  socketPath?: string;
  /** Bounds connecting and each call; default 10 s. */
  timeoutMs?: number;
}

export interface Subscription {
  subscription: string;
  unsubscribe(): Promise<void>;
}

const DEFAULT_TIMEOUT_MS = 10_000;

/** The daemon answered a call with a JSON-RPC error; `code` is one of protocol/errors.ts ErrorCodes. */
export class TaskHistoryError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly data?: unknown,
    /** The wire name of the method that failed. */
    readonly method?: string,
  ) {
    super(message);
    this.name = 'TaskHistoryError';
  }
}

/** No daemon answered on the socket, or the connection ended before a call was answered. */
export class DaemonUnreachableError extends Error {
  constructor(
    readonly socketPath: string,
    /** ECONNREFUSED, ENOENT, ETIMEDOUT, ECONNRESET... */
    readonly errno: string,
    message?: string,
  ) {
    super(
      message ??
        `no daemon answers on ${socketPath} (${errno}); start one with 'taskhistoryd' or 'npm start', or pass --socket`,
    );
    this.name = 'DaemonUnreachableError';
  }
}

interface PendingCall {
  method: string;
  resolve(result: unknown): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout;
}

interface JsonRpcResponse {
  id?: unknown;
  method?: unknown;
  params?: unknown;
  result?: unknown;
  error?: { code: number; message: string; data?: unknown };
}

/** A connection to the taskhistory daemon: JSON-RPC 2.0 over WebSocket on its Unix socket. */
export class TaskHistoryClient {
  private nextId = 1;
  private readonly pending = new Map<string, PendingCall>();
  private readonly subscribers = new Map<string, (event: EventParams) => void>();
  /** Events that arrive before their subscribe call has resolved, keyed by subscription. */
  private readonly earlyEvents = new Map<string, EventParams[]>();
  private subscribesInFlight = 0;
  private closedReason: DaemonUnreachableError | null = null;
  private closeListeners: ((error: DaemonUnreachableError) => void)[] = [];

  private constructor(
    private readonly ws: WebSocket,
    readonly socketPath: string,
    private readonly timeoutMs: number,
  ) {
    ws.on('message', (data) => this.receive(data.toString()));
    ws.on('close', (code, reason) => this.failAll(code, reason.toString()));
    ws.on('error', () => undefined); // 'close' follows and rejects what is pending
  }

  static connect(options: ConnectOptions = {}): Promise<TaskHistoryClient> {
    const socketPath = resolveSocketPath(options.socketPath, currentPathEnvironment());
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(socketUrl(socketPath), { handshakeTimeout: timeoutMs });
      const fail = (error: Error & { code?: string }) => {
        ws.removeAllListeners();
        ws.on('error', () => undefined);
        ws.terminate();
        reject(new DaemonUnreachableError(socketPath, error.code ?? error.message));
      };
      ws.once('error', fail);
      ws.once('unexpected-response', (_request, response) =>
        fail(Object.assign(new Error(`HTTP ${response.statusCode}`), { code: `HTTP ${response.statusCode}` })),
      );
      ws.once('open', () => {
        ws.removeAllListeners();
        resolve(new TaskHistoryClient(ws, socketPath, timeoutMs));
      });
    });
  }

  createTask(params: ParamsOf<'createTask'>): Promise<ResultOf<'createTask'>> {
    return this.call('createTask', params);
  }

  logStep(params: ParamsOf<'logStep'>): Promise<ResultOf<'logStep'>> {
    return this.call('logStep', params);
  }

  completeTask(params: ParamsOf<'completeTask'>): Promise<ResultOf<'completeTask'>> {
    return this.call('completeTask', params);
  }

  getTask(task_id: string): Promise<ResultOf<'getTask'>> {
    return this.call('getTask', { task_id });
  }

  getRecent(count?: number): Promise<ResultOf<'getRecent'>> {
    return this.call('getRecent', count === undefined ? {} : { count });
  }

  toDict(): Promise<ResultOf<'toDict'>> {
    return this.call('toDict', {});
  }

  status(): Promise<ResultOf<'status'>> {
    return this.call('status', {});
  }

  verify(): Promise<ResultOf<'verify'>> {
    return this.call('verify', {});
  }

  redactionRules(): Promise<ResultOf<'redactionRules'>> {
    return this.call('redactionRules', {});
  }

  /** Calls `callback` for every record committed from now on (only the task's, with `task_id`), in commit order. */
  async subscribe(callback: (event: EventParams) => void, options: { task_id?: string } = {}): Promise<Subscription> {
    this.subscribesInFlight++;
    let subscription: string;
    try {
      ({ subscription } = await this.call('subscribe', options));
    } finally {
      this.subscribesInFlight--;
    }
    this.subscribers.set(subscription, callback);
    const early = this.earlyEvents.get(subscription) ?? [];
    this.earlyEvents.delete(subscription);
    if (this.subscribesInFlight === 0) this.earlyEvents.clear();
    for (const event of early) callback(event);
    return {
      subscription,
      unsubscribe: async () => {
        this.subscribers.delete(subscription);
        await this.call('unsubscribe', { subscription });
      },
    };
  }

  /** Calls `listener` once when the connection ends, for whatever reason. */
  onClose(listener: (error: DaemonUnreachableError) => void): void {
    if (this.closedReason) listener(this.closedReason);
    else this.closeListeners.push(listener);
  }

  /** Closes the connection; calls still pending are rejected. */
  close(): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return Promise.resolve();
    return new Promise((resolve) => {
      this.ws.once('close', () => resolve());
      this.ws.close();
    });
  }

  private call<K extends MethodKey>(key: K, params: ParamsOf<K>): Promise<ResultOf<K>> {
    const method = Methods[key].name;
    if (this.closedReason) return Promise.reject(this.closedReason);
    const id = String(this.nextId++);
    return new Promise<ResultOf<K>>((resolve, reject) => {
      const fail = (errno: string, message: string) => {
        if (!this.pending.delete(id)) return;
        clearTimeout(timer);
        reject(new DaemonUnreachableError(this.socketPath, errno, message));
      };
      const timer = setTimeout(
        () => fail('ETIMEDOUT', `the daemon on ${this.socketPath} did not answer ${method} within ${this.timeoutMs} ms`),
        this.timeoutMs,
      );
      this.pending.set(id, { method, resolve: resolve as (result: unknown) => void, reject, timer });
      // A connection that is already closing reports it here rather than leaving the call to time out.
      this.ws.send(JSON.stringify({ jsonrpc: '2.0', id, method, params }), (error) => {
        if (error) fail('ECONNRESET', `could not send ${method} to the daemon on ${this.socketPath}: ${error.message}`);
      });
    });
  }

  private receive(text: string): void {
    let message: JsonRpcResponse;
    try {
      message = JSON.parse(text) as JsonRpcResponse;
    } catch {
      return; // the daemon only sends JSON; nothing sensible to do with anything else
    }
    if (message.method === EVENT_NOTIFICATION) {
      this.deliver(message.params as EventParams);
      return;
    }
    const call = this.pending.get(String(message.id));
    if (!call) return;
    this.pending.delete(String(message.id));
    clearTimeout(call.timer);
    if (message.error) {
      const { code, message: text, data } = message.error;
      call.reject(new TaskHistoryError(code, text || ErrorMessages[code as ErrorCode] || 'Error', data, call.method));
    } else {
      call.resolve(message.result);
    }
  }

  private deliver(event: EventParams): void {
    const callback = this.subscribers.get(event.subscription);
    if (callback) {
      callback(event);
    } else if (this.subscribesInFlight > 0) {
      const queue = this.earlyEvents.get(event.subscription) ?? [];
      queue.push(event);
      this.earlyEvents.set(event.subscription, queue);
    }
  }

  private failAll(code: number, reason: string): void {
    this.closedReason = new DaemonUnreachableError(
      this.socketPath,
      'ECONNRESET',
      `the connection to the daemon on ${this.socketPath} closed (code ${code}${reason ? `: ${reason}` : ''})`,
    );
    for (const call of this.pending.values()) {
      clearTimeout(call.timer);
      call.reject(this.closedReason);
    }
    this.pending.clear();
    for (const listener of this.closeListeners.splice(0)) listener(this.closedReason);
  }
}
