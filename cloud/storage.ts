import type { ChainPoint, ChainRecord } from '../protocol/records.js';

/**
 * Where the endpoint keeps each machine's chain. The sync protocol talks only to this interface,
 * so a database backend for large fleets can replace the file backend without touching it.
 * Callers verify a batch before appending and serialise appends per machine.
 */
export interface CloudStorage {
  /** Whether the machine has ever pushed a record. */
  knows(machineId: string): Promise<boolean>;
  /** The newest stored record's point; {seq: 0, hash: GENESIS_HASH} for a machine with none. */
  head(machineId: string): Promise<ChainPoint>;
  /** Appends records that continue head(machineId); resolves only once they are durable. Returns the new head. */
  append(machineId: string, records: ChainRecord[]): Promise<ChainPoint>;
  /** Records with seq > afterSeq in ascending order, at most `limit` and about `maxBytes` (at least one if any), exactly as pushed. */
  read(machineId: string, afterSeq: number, limit: number, maxBytes: number): Promise<ChainRecord[]>;
  /** Every machine with at least one record, and its head. */
  machines(): Promise<{ machineId: string; head: ChainPoint }[]>;
  close(): Promise<void>;
}
