import type { FleetMachine, FleetTaskDetail, FleetTaskSummary, Incident, StoredEvent, TaskStatus } from '../protocol/fleet-api.js';
import type { ChainPoint, ChainRecord } from '../protocol/records.js';
import type { HeldReader } from './chain-intake.js';

/**
 * Where the endpoint keeps each machine's chain, its task-level facts and its incidents. The sync
 * protocol and the fleet queries talk only to this interface (as Atuin's server to its storage
 * trait): the file backend (embedded default) and PostgreSQL (fleets) both implement it.
 */
export interface CloudStorage {
  /** Whether the machine has ever pushed a record. */
  knows(machineId: string): Promise<boolean>;
  /** The newest stored record's point; {seq: 0, hash: GENESIS_HASH} for a machine with none. */
  head(machineId: string): Promise<ChainPoint>;
  /**
   * `intake` picks the new records of a batch against the machine's head; they are stored and the
   * head moved, all or nothing, durable before it resolves, only if no other push (through any
   * endpoint process sharing the storage) moved the head first: then `intake` runs again against
   * the new head. An error from `intake` stores nothing. `records` is the batch's length (a
   * backend may store several machines' batches together).
   */
  extend(machineId: string, intake: BatchIntake, records: number): Promise<Extension>;
  /** Records with seq > afterSeq in ascending order, at most `limit` and about `maxBytes` (at least one if any), exactly as pushed. */
  read(machineId: string, afterSeq: number, limit: number, maxBytes: number): Promise<ChainRecord[]>;
  /** Every machine with at least one record, and its head. */
  machines(): Promise<{ machineId: string; head: ChainPoint }[]>;
  /** Keeps a refused batch's incident. */
  recordIncident(incident: Omit<Incident, 'at'>): Promise<void>;
  /** Machines by machine_id ascending, after `afterMachineId`. */
  fleetMachines(query: { only?: string; limit: number; afterMachineId?: string }): Promise<FleetMachine[]>;
  /** Tasks newest first (by creation time, then machine_id, then seq), strictly after `after` in that order. */
  fleetTasks(filter: TaskFilter, limit: number, after?: TaskKey): Promise<FleetTaskSummary[]>;
  /** One task with every step, its large fields and its records' chain links, or null when the machine has no such task. */
  task(machineId: string, taskId: string): Promise<FleetTaskDetail | null>;
  /** Incidents newest first, with ids below `beforeId`. */
  incidents(filter: { machine?: string; since?: number }, limit: number, beforeId?: number): Promise<(Incident & { id: number })[]>;
  /** Resolves when the storage answers; rejects with the reason otherwise. */
  ready(): Promise<void>;
  /** Calls `listener` after every push that stored records, whichever endpoint process took it. Returns the unsubscribe. */
  watchStored(listener: (event: StoredEvent) => void): () => void;
  /** Connections to the storage in use and requests waiting for one (a database pool), for /metrics. */
  poolCounts(): { inUse: number; waiting: number };
  close(): Promise<void>;
}

export type BatchIntake = (head: ChainPoint, readHeld: HeldReader) => Promise<ChainRecord[]>;
export interface Extension {
  head: ChainPoint;
  stored: number;
}

export interface TaskFilter {
  machine?: string;
  agent?: string;
  status?: TaskStatus;
  /** Creation time bounds in Unix seconds, inclusive. */
  since?: number;
  until?: number;
  /** Case-insensitive substring of the description or a step's command. */
  q?: string;
}

/** A task's place in the newest-first order: creation time, machine, creating record's seq. */
export interface TaskKey {
  created: number;
  machineId: string;
  seq: number;
}

/** The storage cannot answer now (database down, pool exhausted): the caller should retry after `retryAfterMs`. */
export class StorageUnavailable extends Error {
  constructor(
    message: string,
    readonly retryAfterMs: number,
  ) {
    super(message);
  }
}

/** How long a client waits after a storage failure the storage could not time. */
export const STORAGE_RETRY_AFTER_MS = 1000;

export function retryAfterMsOf(error: unknown): number {
  return error instanceof StorageUnavailable ? error.retryAfterMs : STORAGE_RETRY_AFTER_MS;
}

/** Newest first: a before b when a was created later (ties: machine_id, then seq, descending). */
export function compareTaskKeys(a: TaskKey, b: TaskKey): number {
  return b.created - a.created || (a.machineId < b.machineId ? 1 : a.machineId > b.machineId ? -1 : 0) || b.seq - a.seq;
}
