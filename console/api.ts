import type { FleetError, FleetMachine, FleetTaskDetail, IncidentsPage, MachinesPage, TasksPage } from '../protocol/fleet-api.js';
import { FLEET_PATHS, PAGE_MAX } from './fleet-contract.js';

/** The endpoint said 401: the token is wrong or has been revoked. */
export class Unauthorized extends Error {}

/** Any other answer than 2xx, with the endpoint's own message when it sent one. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** The fleet queries (protocol/fleet-api.ts) with the session's token. */
export class FleetApi {
  constructor(private readonly token: string) {}

  /** Request headers of every call: the bearer token, never a cookie or a URL parameter. */
  get headers(): Record<string, string> {
    return { authorization: `Bearer ${this.token}`, accept: 'application/json' };
  }

  /** Every machine, all pages. */
  async machines(): Promise<FleetMachine[]> {
    const machines: FleetMachine[] = [];
    for (let cursor: string | null = null; ; ) {
      const query = new URLSearchParams({ limit: String(PAGE_MAX), ...(cursor && { cursor }) });
      const page: MachinesPage = await this.get(`${FLEET_PATHS.machines}?${query.toString()}`);
      machines.push(...page.machines);
      cursor = page.next_cursor;
      if (!cursor) return machines;
    }
  }

  tasks(query: URLSearchParams): Promise<TasksPage> {
    return this.get(`${FLEET_PATHS.tasks}?${query.toString()}`);
  }

  task(machineId: string, taskId: string): Promise<FleetTaskDetail> {
    return this.get(FLEET_PATHS.task(machineId, taskId));
  }

  incidents(query: URLSearchParams): Promise<IncidentsPage> {
    return this.get(`${FLEET_PATHS.incidents}?${query.toString()}`);
  }

  private async get<T>(path: string): Promise<T> {
    let response: Response;
    try {
      response = await fetch(path, { headers: this.headers, cache: 'no-store' });
    } catch (error) {
      throw new ApiError(0, `The endpoint at ${location.origin} did not answer ${path} (${(error as Error).message}). Is it running?`);
    }
    if (response.status === 401) throw new Unauthorized('The endpoint refused this token: it is wrong or has been revoked. Sign in with a valid token.');
    const body = (await response.json().catch(() => null)) as (T & Partial<FleetError>) | null;
    if (!response.ok || body === null) {
      const detail = typeof body?.error === 'string' ? body.error : response.statusText || 'no JSON answer';
      throw new ApiError(response.status, `${path} answered ${response.status}: ${detail}`);
    }
    return body;
  }
}
