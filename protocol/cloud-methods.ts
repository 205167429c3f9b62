import { z } from 'zod';
import { CLOUD_PULL_LIMIT_MAX } from './limits.js';
import type { ChainRecord } from './records.js';
import { method } from './methods.js';

/**
 * The sync protocol between a daemon and the cloud endpoint: JSON-RPC 2.0 over WebSocket at
 * CLOUD_SYNC_PATH, the token in `Authorization: Bearer <token>`.
 */
export const CLOUD_SYNC_PATH = '/v1/sync';
export const cloudTaskHistoryPath = (machineId: string) => `/v1/machines/${encodeURIComponent(machineId)}/task_history.json`;

const machineId = z.string().min(1).max(200);

export interface CloudHead {
  acked_seq: number;
  head_hash: string | null;
}

export const CloudMethods = {
  /** Appends records that continue the machine's chain; already-held ones are acknowledged again. */
  push: method<CloudHead>()(
    'push',
    z.strictObject({ machine_id: machineId, records: z.array(z.record(z.string(), z.unknown())).max(100_000) }),
  ),
  head: method<CloudHead>()('head', z.strictObject({ machine_id: machineId })),
  pull: method<{ records: ChainRecord[]; more: boolean }>()(
    'pull',
    z.strictObject({
      machine_id: machineId,
      after_seq: z.int().min(0),
      limit: z.int().min(1).max(CLOUD_PULL_LIMIT_MAX).optional(),
    }),
  ),
  machines: method<{ machines: { machine_id: string; acked_seq: number; head_hash: string | null }[] }>()(
    'machines',
    z.strictObject({}),
  ),
} as const;
