import { isRecordLike } from '../protocol/data-file.js';
import { CloudMethods, type CloudHead } from '../protocol/cloud-methods.js';
import { ErrorCodes, RpcError } from '../protocol/errors.js';
import type { ChainPoint, ChainRecord } from '../protocol/records.js';
import { BatchRefused, newRecordsOf } from './chain-intake.js';
import { log } from '../node/log.js';
import type { RpcDispatcher } from '../node/rpc-dispatch.js';
import type { CloudMetrics } from './metrics.js';
import { retryAfterMsOf, type CloudStorage } from './storage.js';
import { pushRefusal, readRefusal, type Principal } from './tokens.js';

/** Records per `pull` when the caller names no limit, and the bytes one answer carries at most (one record always). */
const DEFAULT_PULL_LIMIT = 1000;
const PULL_MAX_BYTES = 8 * 1024 * 1024;

/** The sync protocol's methods (protocol/cloud-methods.ts) on top of a storage backend. */
export function registerSyncMethods(endpoint: RpcDispatcher<Principal>, storage: CloudStorage, metrics: CloudMetrics): void {
  endpoint.register(CloudMethods.push, async ({ machine_id, records }, principal) => {
    refuseUnless(pushRefusal(principal, machine_id));
    const bad = records.findIndex((record) => !isRecordLike(record));
    if (bad !== -1) {
      throw new RpcError(ErrorCodes.InvalidParams, `records[${bad}] is not a chain record`, { index: bad });
    }
    const endTimer = metrics.pushDuration.startTimer();
    let refusedAgainst: ChainPoint | undefined;
    try {
      const { head, stored } = await storage.extend(
        machine_id,
        (held, readHeld) => {
          refusedAgainst = held;
          return newRecordsOf(records as unknown as ChainRecord[], held, readHeld);
        },
        records.length,
      );
      metrics.recordsStored.inc(stored);
      return cloudHead(head);
    } catch (error) {
      if (error instanceof BatchRefused) throw await refusal(machine_id, error, refusedAgainst!);
      metrics.pushFailed.inc();
      throw storageFailure(error, `the endpoint could not store the batch for machine ${machine_id}; nothing was acknowledged`);
    } finally {
      endTimer();
    }
  });

  endpoint.register(CloudMethods.head, async ({ machine_id }, principal) => {
    refuseUnless(readRefusal(principal, machine_id));
    return cloudHead(await answering(() => storage.head(machine_id)));
  });

  endpoint.register(CloudMethods.pull, async ({ machine_id, after_seq, limit }, principal) => {
    refuseUnless(readRefusal(principal, machine_id));
    return answering(async () => {
      const records = await storage.read(machine_id, after_seq, limit ?? DEFAULT_PULL_LIMIT, PULL_MAX_BYTES);
      const head = await storage.head(machine_id);
      const lastSeq = records.at(-1)?.seq ?? after_seq;
      return { records, more: lastSeq < head.seq };
    });
  });

  endpoint.register(CloudMethods.machines, async (_params, principal) => {
    const machines = (await answering(() => storage.machines())).filter(({ machineId }) => readRefusal(principal, machineId) === null);
    return { machines: machines.map(({ machineId, head }) => ({ machine_id: machineId, ...cloudHead(head) })) };
  });

  /** A refused batch: kept as an incident (best effort: the refusal is the answer either way) and answered 2003. */
  async function refusal(machineId: string, error: BatchRefused, head: ChainPoint): Promise<RpcError> {
    log.warn('refused a batch', { machine: machineId, reason: error.reason, seq: error.seq, detail: error.message });
    metrics.pushRefused.inc({ reason: error.reason });
    await storage
      .recordIncident({ machine_id: machineId, seq: error.seq, reason: error.reason, detail: error.message })
      .catch((failure: unknown) => log.error('could not keep an incident', { machine: machineId, error: (failure as Error).message }));
    return new RpcError(ErrorCodes.ChainMismatch, error.message, { reason: error.reason, seq: error.seq, ...cloudHead(head) });
  }
}

/** Runs a storage read; a storage that cannot answer becomes StorageFailure with `retry_after_ms`. */
async function answering<T>(read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (error) {
    throw storageFailure(error, 'the endpoint could not read its storage');
  }
}

function storageFailure(error: unknown, what: string): RpcError {
  const message = (error as Error).message ?? String(error);
  log.error(what, { error: message });
  return new RpcError(ErrorCodes.StorageFailure, `${what}: ${message}`, { retry_after_ms: retryAfterMsOf(error) });
}

function cloudHead(head: ChainPoint): CloudHead {
  return { acked_seq: head.seq, head_hash: head.seq === 0 ? null : head.hash };
}

function refuseUnless(refusal: string | null): void {
  if (refusal !== null) throw new RpcError(ErrorCodes.Forbidden, `Forbidden: ${refusal}`);
}
