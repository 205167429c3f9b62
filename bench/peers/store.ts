import type { CompleteTaskInput, CreateTaskInput, LogStepInput } from '../../protocol/methods.js';

export const PEER_KINDS = ['sqlite', 'json-fsync', 'json-nofsync'] as const;
export type PeerKind = (typeof PEER_KINDS)[number];

/**
 * What a peer keeps: the same three writes as the daemon, each durable (as far as the peer's way
 * allows) before it returns. Peers are synchronous on purpose: that is how their writers funnel.
 */
export interface PeerStore {
  createTask(params: CreateTaskInput): { task_id: string; seq: number };
  logStep(params: LogStepInput): { seq: number };
  completeTask(params: CompleteTaskInput): { seq: number };
  /** Runs `writes` with per-write durability suspended and makes them durable at once (prefill). */
  bulk(writes: () => void): void;
  close(): void;
}

/** A refused write, answered to the client as a JSON-RPC error with the daemon's code. */
export class PeerRefusal extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

export function unixSeconds(): number {
  return Date.now() / 1000;
}
