import type { StepView, TaskView } from '../protocol/task-view.js';

/** The fleet queries of the cloud endpoint (issue 12), as the console reads them. */

export interface MachineSummary {
  machine_id: string;
  acked_seq: number;
  head_hash: string | null;
  /** ISO time or Unix seconds of the newest acknowledged push, null when never. */
  last_push_at: string | number | null;
  tasks: number;
  running: number;
  incidents: number;
}

export type FleetTask = TaskView & { machine_id: string };
export type FleetStep = StepView & { hash?: string };

export interface TaskPage {
  tasks: FleetTask[];
  next_cursor: string | null;
}

export interface Incident {
  machine_id: string;
  seq?: number;
  reason: string;
  at?: string | number;
  [key: string]: unknown;
}

/** The endpoint said 401: the token is wrong, expired or revoked. */
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

export class FleetApi {
  constructor(private readonly token: string) {}

  /** Request headers of every call: the bearer token, never a cookie or a URL parameter. */
  get headers(): Record<string, string> {
    return { authorization: `Bearer ${this.token}`, accept: 'application/json' };
  }

  machines(): Promise<MachineSummary[]> {
    return this.get<{ machines: MachineSummary[] } | MachineSummary[]>('/v1/machines').then((body) => (Array.isArray(body) ? body : body.machines));
  }

  tasks(filters: URLSearchParams): Promise<TaskPage> {
    return this.get<TaskPage>(`/v1/tasks?${filters.toString()}`);
  }

  task(machineId: string, taskId: string): Promise<FleetTask & { steps: FleetStep[] }> {
    return this.get(`/v1/machines/${encodeURIComponent(machineId)}/tasks/${encodeURIComponent(taskId)}`);
  }

  incidents(filters: URLSearchParams): Promise<Incident[]> {
    return this.get<{ incidents: Incident[] } | Incident[]>(`/v1/incidents?${filters.toString()}`).then((body) =>
      Array.isArray(body) ? body : body.incidents,
    );
  }

  private async get<T>(path: string): Promise<T> {
    let response: Response;
    try {
      response = await fetch(path, { headers: this.headers, cache: 'no-store' });
    } catch (error) {
      throw new ApiError(0, `the endpoint at ${location.origin} did not answer ${path} (${(error as Error).message}); is it running?`);
    }
    if (response.status === 401) throw new Unauthorized('The endpoint refused this token: it is wrong or has been revoked. Sign in with a valid token.');
    const body = (await response.json().catch(() => null)) as { error?: unknown } | null;
    if (!response.ok) {
      const detail = body && typeof body.error === 'string' ? body.error : response.statusText;
      throw new ApiError(response.status, `${path} answered ${response.status}: ${detail}`);
    }
    return body as T;
  }
}
