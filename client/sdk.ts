import { ErrorMessages, RpcError, type ErrorCode } from '../protocol/errors.js';
import {
  EVENT_NOTIFICATION,
  Methods,
  type EventParams,
  type MethodKey,
  type ParamsOf,
  type ResultOf,
  type TaskDictPage,
  type TaskPage,
} from '../protocol/methods.js';
import { appendTaskFragments } from '../protocol/task-fragments.js';
import type { TaskHistoryDict, TaskView } from '../protocol/task-view.js';
import { resolveSocketPath, socketUrl } from '../protocol/paths.js';
import { currentPathEnvironment } from '../node/path-environment.js';
import { checkSocketDirectory } from '../node/socket-directory.js';
import { RpcClient, RpcConnectionError, RpcTimeoutError } from '../node/rpc-client.js';
import { WebSocketOpenError, WebSocketTransport } from '../node/websocket-transport.js';

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

export interface PageOptions {
  /** Upper bound of each page in bytes; the daemon's own maximum (half its --max-message-bytes) when larger or not given. */
  pageBytes?: number;
}

const DEFAULT_TIMEOUT_MS = 10_000;

/** The methods whose answers can be larger than one message: always asked for in pages. */
type PagedKey = 'toDict' | 'getRecent' | 'getTask';

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

/**
 * A call was sent but no answer came in time (a stopped or overloaded daemon). A write may still
 * have been recorded: the message says how to check before retrying.
 */
export class CallTimeoutError extends DaemonUnreachableError {
  constructor(
    socketPath: string,
    readonly method: string,
    message: string,
  ) {
    super(socketPath, 'ETIMEDOUT', message);
    this.name = 'CallTimeoutError';
  }
}

/** How to find out whether a write that timed out was recorded, or '' for calls that change nothing. */
function recordedCheckHint(method: string, params: unknown): string {
  const taskId = (params as { task_id?: unknown } | null)?.task_id;
  if ((method === Methods.logStep.name || method === Methods.completeTask.name) && typeof taskId === 'string') {
    return `; it may have been recorded: check with get_task("${taskId}") or \`taskhistory show ${taskId}\` before retrying`;
  }
  if (method === Methods.createTask.name) {
    return '; the task may have been created: check with get_recent() or `taskhistory recent` before retrying';
  }
  return '';
}

/** A connection to the taskhistory daemon: JSON-RPC 2.0 over WebSocket on its Unix socket. */
export class TaskHistoryClient {
  private readonly rpc: RpcClient;
  private readonly subscribers = new Map<string, (event: EventParams) => void>();
  /** Events that arrive before their subscribe call has resolved, keyed by subscription. */
  private readonly earlyEvents = new Map<string, EventParams[]>();
  private subscribesInFlight = 0;
  private closedReason: DaemonUnreachableError | null = null;
  private closeListeners: ((error: DaemonUnreachableError) => void)[] = [];

  private constructor(
    private readonly transport: WebSocketTransport,
    readonly socketPath: string,
    private readonly timeoutMs: number,
  ) {
    this.rpc = new RpcClient(transport, `the daemon on ${socketPath}`, (method, params) => {
      if (method === EVENT_NOTIFICATION) this.deliver(params as EventParams);
    });
    transport.onClose((reason) => {
      this.closedReason = new DaemonUnreachableError(socketPath, 'ECONNRESET', reason);
      for (const listener of this.closeListeners.splice(0)) listener(this.closedReason);
    });
  }

  static async connect(options: ConnectOptions = {}): Promise<TaskHistoryClient> {
    const socketPath = resolveSocketPath(options.socketPath, currentPathEnvironment());
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    checkSocketDirectory(socketPath); // before sending anything: a socket others could have planted
    try {
      const transport = await WebSocketTransport.open(socketUrl(socketPath), { peer: `the daemon on ${socketPath}`, handshakeTimeoutMs: timeoutMs });
      return new TaskHistoryClient(transport, socketPath, timeoutMs);
    } catch (error) {
      if (error instanceof WebSocketOpenError) throw new DaemonUnreachableError(socketPath, error.errno);
      throw error;
    }
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

  // to_dict, get_recent and get_task are read in pages and assembled, so no answer is too large for one message.

  async getTask(task_id: string): Promise<TaskView> {
    const [task] = await this.assembled(this.pages('getTask', { task_id }));
    return task;
  }

  getRecent(count?: number): Promise<TaskView[]> {
    return this.assembled(this.pages('getRecent', count === undefined ? {} : { count }));
  }

  async toDict(): Promise<TaskHistoryDict> {
    const tasks: TaskView[] = [];
    let last: TaskDictPage | undefined;
    for await (const page of this.toDictPages()) {
      appendTaskFragments(tasks, page.tasks);
      last = page;
    }
    const { count, max_tasks } = last as TaskDictPage;
    return { tasks, count, max_tasks };
  }

  /**
   * The pages of to_dict, one call each, for consumers that stream: all show the log as of the first
   * page. A task too large for one page is split: consecutive entries with the same task_id are one
   * task (same head), its steps continued.
   */
  toDictPages(options: PageOptions = {}): AsyncGenerator<TaskDictPage> {
    return this.pages('toDict', {}, options) as AsyncGenerator<TaskDictPage>;
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
    return this.transport.close();
  }

  private async *pages<K extends PagedKey>(key: K, params: Omit<ParamsOf<K>, 'cursor' | 'page_bytes'>, options: PageOptions = {}): AsyncGenerator<TaskPage> {
    let cursor: string | null = null;
    do {
      const pageParams = { ...params, cursor, ...(options.pageBytes !== undefined && { page_bytes: options.pageBytes }) } as ParamsOf<K>;
      const page = (await this.call(key, pageParams)) as TaskPage;
      yield page;
      cursor = page.next_cursor;
    } while (cursor !== null);
  }

  /** The tasks of every page, a split task joined again. */
  private async assembled(pages: AsyncIterable<TaskPage>): Promise<TaskView[]> {
    const tasks: TaskView[] = [];
    for await (const page of pages) appendTaskFragments(tasks, page.tasks);
    return tasks;
  }

  private async call<K extends MethodKey>(key: K, params: ParamsOf<K>): Promise<ResultOf<K>> {
    const method = Methods[key].name;
    if (this.closedReason) throw this.closedReason;
    try {
      return (await this.rpc.request(method, params, this.timeoutMs)) as ResultOf<K>;
    } catch (error) {
      if (error instanceof RpcError) {
        throw new TaskHistoryError(error.code, error.message || ErrorMessages[error.code as ErrorCode] || 'Error', error.data, method);
      }
      if (error instanceof RpcTimeoutError) {
        throw new CallTimeoutError(this.socketPath, method, `${error.message}${recordedCheckHint(method, params)}`);
      }
      if (error instanceof RpcConnectionError) throw new DaemonUnreachableError(this.socketPath, 'ECONNRESET', error.message);
      throw error;
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
}
