import type { IncomingMessage, ServerResponse } from 'node:http';
import type { z } from 'zod';
import {
  FleetPaths,
  IncidentsQuery,
  MachinesQuery,
  TasksQuery,
  type FleetError,
  type IncidentsPage,
  type MachinesPage,
  type TasksPage,
} from '../protocol/fleet-api.js';
import { DEFAULT_MAX_TASKS } from '../protocol/limits.js';
import { log } from '../node/log.js';
import { streamStoredEvents } from './events-stream.js';
import type { CloudMetrics } from './metrics.js';
import type { RevocationWatch } from './revocation-watch.js';
import { retryAfterMsOf, type CloudStorage, type TaskKey } from './storage.js';
import { TaskHistoryBuilder } from './task-history-view.js';
import { AuthUnavailable, readRefusal, type Authenticated, type Authenticator } from './tokens.js';
import { requestTarget } from '../node/http-refusal.js';

/** Records read per storage call while building a task view. */
const VIEW_READ_BATCH = 5000;
const VIEW_READ_BYTES = 16 * 1024 * 1024;

const TASK_HISTORY_ROUTE = /^\/v1\/machines\/([^/]+)\/task_history\.json$/;
const TASK_ROUTE = /^\/v1\/machines\/([^/]+)\/tasks\/([^/]+)$/;

export interface HttpRoutesOptions {
  storage: CloudStorage;
  authenticator: Authenticator;
  metrics: CloudMetrics;
  revocations: RevocationWatch;
}

/** An answer that is not 200: status, body and headers. */
class HttpRefusal extends Error {
  constructor(
    readonly status: number,
    readonly body: FleetError,
    readonly headers: Record<string, string> = {},
  ) {
    super(body.error);
  }
}

/**
 * The endpoint's plain-HTTP side, GET only: operations (/healthz, /readyz, /metrics, no token) and,
 * with a bearer token, the fleet queries (protocol/fleet-api.ts), the live event stream and each
 * machine's task_history.json.
 */
export class HttpRoutes {
  constructor(private readonly options: HttpRoutesOptions) {}

  /** Answers the request; never throws (a failure becomes a 4xx/5xx answer or a closed socket). */
  async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const url = parseTarget(req.url);
      if (req.method !== 'GET') throw new HttpRefusal(405, { error: 'only GET is served here' }, { allow: 'GET' });
      await this.route(url, req, res);
    } catch (error) {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const refusal = asRefusal(error);
      sendJson(res, refusal.status, refusal.body, refusal.headers);
    }
  }

  private async route(url: URL, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const { pathname } = url;
    const { storage, metrics } = this.options;
    if (pathname === FleetPaths.healthz) return sendJson(res, 200, { status: 'serving' });
    if (pathname === FleetPaths.readyz) {
      try {
        await storage.ready();
      } catch (error) {
        return sendJson(res, 503, { status: 'unavailable', reason: (error as Error).message });
      }
      return sendJson(res, 200, { status: 'ready' });
    }
    if (pathname === FleetPaths.metrics) {
      const text = await metrics.registry.metrics();
      res.writeHead(200, { 'content-type': metrics.registry.contentType, 'content-length': Buffer.byteLength(text) });
      res.end(text);
      return;
    }
    if (pathname === FleetPaths.machines) return sendJson(res, 200, await this.machines(url, await this.caller(req)));
    if (pathname === FleetPaths.tasks) return sendJson(res, 200, await this.tasks(url, await this.caller(req)));
    if (pathname === FleetPaths.incidents) return sendJson(res, 200, await this.incidents(url, await this.caller(req)));
    if (pathname === FleetPaths.events) return streamStoredEvents(req, res, await this.caller(req), this.options);
    const task = TASK_ROUTE.exec(pathname);
    if (task) return sendJson(res, 200, await this.task(segment(task[1], 'machine id'), segment(task[2], 'task id'), await this.caller(req)));
    const history = TASK_HISTORY_ROUTE.exec(pathname);
    if (history) return sendJson(res, 200, await this.taskHistory(segment(history[1], 'machine id'), url, await this.caller(req)));
    throw new HttpRefusal(404, { error: `no such resource: ${pathname}` });
  }

  private async caller(req: IncomingMessage): Promise<Authenticated> {
    const found = await this.options.authenticator.authenticate(req.headers.authorization);
    if (!found) throw new HttpRefusal(401, { error: 'missing, unknown or revoked bearer token' }, { 'www-authenticate': 'Bearer' });
    return found;
  }

  private async machines(url: URL, { principal }: Authenticated): Promise<MachinesPage> {
    const query = parseQuery(url, MachinesQuery);
    const after = query.cursor === undefined ? undefined : decodeCursor(query.cursor, (value) => (typeof value === 'string' ? value : null));
    const only = principal.kind === 'machine' ? principal.machineId : undefined;
    const machines = await this.storageCall(() => this.options.storage.fleetMachines({ only, limit: query.limit + 1, afterMachineId: after }));
    const page = machines.slice(0, query.limit);
    return { machines: page, next_cursor: machines.length > query.limit ? encodeCursor(page.at(-1)!.machine_id) : null };
  }

  private async tasks(url: URL, caller: Authenticated): Promise<TasksPage> {
    const { limit, cursor, ...filter } = parseQuery(url, TasksQuery);
    const after = cursor === undefined ? undefined : decodeCursor(cursor, taskKeyOf);
    const machine = this.readableMachine(filter.machine, caller);
    const { storage } = this.options;
    if (machine !== undefined && !(await this.storageCall(() => storage.knows(machine)))) {
      throw new HttpRefusal(404, { error: `no records for machine ${machine}`, parameter: 'machine' });
    }
    const tasks = await this.storageCall(() => storage.fleetTasks({ ...filter, machine }, limit + 1, after));
    const page = tasks.slice(0, limit);
    const last = page.at(-1);
    const nextKey = last && tasks.length > limit ? [last.timestamp, last.machine_id, last.seq] : null;
    return { tasks: page, next_cursor: nextKey ? encodeCursor(nextKey) : null };
  }

  private async incidents(url: URL, caller: Authenticated): Promise<IncidentsPage> {
    const { limit, cursor, since, ...rest } = parseQuery(url, IncidentsQuery);
    const beforeId = cursor === undefined ? undefined : decodeCursor(cursor, (value) => (Number.isSafeInteger(value) ? (value as number) : null));
    const machine = this.readableMachine(rest.machine, caller);
    const found = await this.storageCall(() => this.options.storage.incidents({ machine, since }, limit + 1, beforeId));
    const page = found.slice(0, limit);
    return {
      incidents: page.map(({ id: _id, ...incident }) => incident),
      next_cursor: found.length > limit ? encodeCursor(page.at(-1)!.id) : null,
    };
  }

  private async task(machineId: string, taskId: string, { principal }: Authenticated): Promise<unknown> {
    refuseUnless(readRefusal(principal, machineId));
    const { storage } = this.options;
    if (!(await this.storageCall(() => storage.knows(machineId)))) throw new HttpRefusal(404, { error: `no records for machine ${machineId}` });
    const task = await this.storageCall(() => storage.task(machineId, taskId));
    if (!task) throw new HttpRefusal(404, { error: `machine ${machineId} has no task ${taskId}` });
    return task;
  }

  private async taskHistory(machineId: string, url: URL, { principal }: Authenticated): Promise<unknown> {
    refuseUnless(readRefusal(principal, machineId));
    const maxTasksText = url.searchParams.get('max_tasks');
    const maxTasks = maxTasksText === null ? DEFAULT_MAX_TASKS : Number(maxTasksText);
    if (!Number.isSafeInteger(maxTasks) || maxTasks < 1) {
      throw new HttpRefusal(400, { error: `max_tasks must be a positive integer, not ${JSON.stringify(maxTasksText)}`, parameter: 'max_tasks' });
    }
    const { storage } = this.options;
    if (!(await this.storageCall(() => storage.knows(machineId)))) throw new HttpRefusal(404, { error: `no records for machine ${machineId}` });
    const view = new TaskHistoryBuilder(maxTasks);
    for (let afterSeq = 0; ; ) {
      const records = await this.storageCall(() => storage.read(machineId, afterSeq, VIEW_READ_BATCH, VIEW_READ_BYTES));
      if (records.length === 0) break;
      for (const record of records) view.add(record);
      afterSeq = records[records.length - 1].seq;
    }
    return view.result();
  }

  /** A machine token reads its own machine only: the filter defaults to it and may not name another. */
  private readableMachine(requested: string | undefined, { principal }: Authenticated): string | undefined {
    if (principal.kind !== 'machine') return requested;
    if (requested !== undefined && requested !== principal.machineId) refuseUnless(readRefusal(principal, requested));
    return principal.machineId;
  }

  private async storageCall<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      const retryAfterMs = retryAfterMsOf(error);
      throw new HttpRefusal(
        503,
        { error: `the endpoint's storage could not answer: ${(error as Error).message}` },
        { 'retry-after': String(Math.ceil(retryAfterMs / 1000)) },
      );
    }
  }
}

/** The request target as a URL, or null when it is no path (`//`, `*`, `http://x`, garbage): `new URL` would throw. */
function parseTarget(target: string | undefined): URL {
  const url = requestTarget(target);
  if (!url) throw new HttpRefusal(400, { error: `the request target ${JSON.stringify(target)} is not a path` });
  return url;
}

function segment(text: string, what: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw new HttpRefusal(400, { error: `the ${what} ${JSON.stringify(text)} is not valid percent-encoding` });
  }
}

/** Query parameters checked against a schema; a bad, repeated or unknown parameter is a 400 naming it. */
function parseQuery<S extends z.ZodType>(url: URL, schema: S): z.output<S> {
  const params: Record<string, string> = {};
  for (const [key, value] of url.searchParams) {
    if (key in params) throw new HttpRefusal(400, { error: `the parameter ${key} is given more than once`, parameter: key });
    params[key] = value;
  }
  const parsed = schema.safeParse(params);
  if (parsed.success) return parsed.data;
  const [issue] = parsed.error.issues;
  const parameter = issue.code === 'unrecognized_keys' ? issue.keys[0] : String(issue.path[0] ?? '');
  const error = issue.code === 'unrecognized_keys' ? `unknown parameter ${parameter}` : `parameter ${parameter}: ${issue.message}`;
  throw new HttpRefusal(400, { error, parameter });
}

function encodeCursor(value: unknown): string {
  return Buffer.from(JSON.stringify(value), 'utf8').toString('base64url');
}

function decodeCursor<T>(cursor: string, check: (value: unknown) => T | null): T {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    value = undefined;
  }
  const decoded = value === undefined ? null : check(value);
  if (decoded === null) throw new HttpRefusal(400, { error: 'parameter cursor: not a cursor this endpoint gave out (pass next_cursor back unchanged)', parameter: 'cursor' });
  return decoded;
}

function taskKeyOf(value: unknown): TaskKey | null {
  if (!Array.isArray(value) || value.length !== 3) return null;
  const [created, machineId, seq] = value as unknown[];
  if (typeof created !== 'number' || typeof machineId !== 'string' || !Number.isSafeInteger(seq)) return null;
  return { created, machineId, seq: seq as number };
}

function refuseUnless(refusal: string | null): void {
  if (refusal !== null) throw new HttpRefusal(403, { error: refusal });
}

function asRefusal(error: unknown): HttpRefusal {
  if (error instanceof HttpRefusal) return error;
  if (error instanceof AuthUnavailable) {
    return new HttpRefusal(503, { error: `the token cannot be checked now: ${error.message}` }, { 'retry-after': String(Math.ceil(error.retryAfterMs / 1000)) });
  }
  log.error('HTTP request failed', { error: error instanceof Error ? (error.stack ?? error.message) : String(error) });
  return new HttpRefusal(500, { error: 'internal error' });
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}
