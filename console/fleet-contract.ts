import type { FLEET_PAGE_MAX, FleetPaths, TASK_STATUSES } from '../protocol/fleet-api.js';

/**
 * The fleet API's constants, restated for the browser: protocol/fleet-api.ts also holds its zod
 * schemas, and bundling zod would add ~450 KB and an eval probe that the page's CSP refuses (a
 * console error). Each is typed by the protocol's own `typeof`, so a change there that is not made
 * here fails the build.
 */
export const FLEET_PATHS: typeof FleetPaths = {
  machines: '/v1/machines',
  tasks: '/v1/tasks',
  task: (machineId, taskId) => `/v1/machines/${encodeURIComponent(machineId)}/tasks/${encodeURIComponent(taskId)}`,
  incidents: '/v1/incidents',
  events: '/v1/events',
  healthz: '/healthz',
  readyz: '/readyz',
  metrics: '/metrics',
};

export const PAGE_MAX: typeof FLEET_PAGE_MAX = 500;

export const STATUSES: typeof TASK_STATUSES = ['running', 'completed', 'failed', 'aborted'];
