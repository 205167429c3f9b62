import type { CloudHead } from '../protocol/cloud-methods.js';
import type { ChainRecord } from '../protocol/records.js';

/**
 * What the sync loop and the start-up restore need from a connection to the cloud endpoint: its
 * calls, and how they fail. The loop knows nothing of sockets; daemon/cloud-connection.ts is the
 * WebSocket implementation.
 */
export interface CloudLink {
  head(machineId: string): Promise<CloudHead>;
  push(machineId: string, records: ChainRecord[]): Promise<CloudHead>;
  pull(machineId: string, afterSeq: number, limit: number, timeoutMs: number): Promise<{ records: unknown[]; more: boolean }>;
  /** Resolves once the link has ended, with why. */
  readonly ended: Promise<Error>;
  /** Why the link ended, or null while it is open. */
  readonly failure: Error | null;
  close(): void;
}

/**
 * How a cloud call failed: `unreachable` (no connection, it ended, or no answer in time), `auth`
 * (the token was refused), `chain_mismatch` (the batch does not continue the cloud's chain),
 * `storage` (the cloud could not store it; `retryAfterMs` says when to come back), `refused`
 * (any other error answer).
 */
export type CloudFailureKind = 'unreachable' | 'auth' | 'chain_mismatch' | 'storage' | 'refused';

export class CloudFailure extends Error {
  constructor(
    readonly kind: CloudFailureKind,
    message: string,
    /** For `storage`: how long the cloud asked us to wait before the next attempt, when it said. */
    readonly retryAfterMs: number | null = null,
  ) {
    super(message);
    this.name = 'CloudFailure';
  }
}

export const isAuthFailure = (error: unknown): boolean => error instanceof CloudFailure && error.kind === 'auth';
