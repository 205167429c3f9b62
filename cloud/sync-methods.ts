import { isRecordLike } from '../protocol/data-file.js';
import { CloudMethods, type CloudHead } from '../protocol/cloud-methods.js';
import { ErrorCodes, RpcError } from '../protocol/errors.js';
import type { ChainPoint, ChainRecord } from '../protocol/records.js';
import { BatchRefused, newRecordsOf } from './chain-intake.js';
import { log } from '../node/log.js';
import type { RpcDispatcher } from '../node/rpc-dispatch.js';
import type { CloudStorage } from './storage.js';
import { pushRefusal, readRefusal, type Principal } from './tokens.js';

/** Records per `pull` when the caller names no limit, and the bytes one answer carries at most (one record always). */
const DEFAULT_PULL_LIMIT = 1000;
const PULL_MAX_BYTES = 8 * 1024 * 1024;

/** The sync protocol's methods (protocol/cloud-methods.ts) on top of a storage backend. */
export function registerSyncMethods(endpoint: RpcDispatcher<Principal>, storage: CloudStorage): void {
  const pushes = new PerMachineQueue();

  endpoint.register(CloudMethods.push, async ({ machine_id, records }, principal) => {
    refuseUnless(pushRefusal(principal, machine_id));
    const bad = records.findIndex((record) => !isRecordLike(record));
    if (bad !== -1) {
      throw new RpcError(ErrorCodes.InvalidParams, `records[${bad}] is not a chain record`, { index: bad });
    }
    return pushes.run(machine_id, async () => {
      const head = await storage.head(machine_id);
      let fresh: ChainRecord[];
      try {
        fresh = await newRecordsOf(records as unknown as ChainRecord[], head, (afterSeq, count) =>
          storage.read(machine_id, afterSeq, count, Number.MAX_SAFE_INTEGER),
        );
      } catch (error) {
        if (!(error instanceof BatchRefused)) throw error;
        log.warn('refused a batch', { machine: machine_id, reason: error.reason, seq: error.seq, detail: error.message });
        throw new RpcError(ErrorCodes.ChainMismatch, error.message, {
          reason: error.reason,
          seq: error.seq,
          ...cloudHead(head),
        });
      }
      if (fresh.length === 0) return cloudHead(head);
      try {
        return cloudHead(await storage.append(machine_id, fresh));
      } catch (error) {
        log.error('could not store a batch', { machine: machine_id, error: (error as Error).message });
        throw new RpcError(ErrorCodes.StorageFailure, `the endpoint could not store the batch: ${(error as Error).message}`);
      }
    });
  });

  endpoint.register(CloudMethods.head, async ({ machine_id }, principal) => {
    refuseUnless(readRefusal(principal, machine_id));
    return cloudHead(await storage.head(machine_id));
  });

  endpoint.register(CloudMethods.pull, async ({ machine_id, after_seq, limit }, principal) => {
    refuseUnless(readRefusal(principal, machine_id));
    const records = await storage.read(machine_id, after_seq, limit ?? DEFAULT_PULL_LIMIT, PULL_MAX_BYTES);
    const head = await storage.head(machine_id);
    const lastSeq = records.at(-1)?.seq ?? after_seq;
    return { records, more: lastSeq < head.seq };
  });

  endpoint.register(CloudMethods.machines, async (_params, principal) => {
    const machines = (await storage.machines()).filter(({ machineId }) => readRefusal(principal, machineId) === null);
    return { machines: machines.map(({ machineId, head }) => ({ machine_id: machineId, ...cloudHead(head) })) };
  });
}

function cloudHead(head: ChainPoint): CloudHead {
  return { acked_seq: head.seq, head_hash: head.seq === 0 ? null : head.hash };
}

function refuseUnless(refusal: string | null): void {
  if (refusal !== null) throw new RpcError(ErrorCodes.Forbidden, `Forbidden: ${refusal}`);
}

/** Runs tasks one after another per machine, so that verify-then-append sees the head it verified against. */
class PerMachineQueue {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(machineId: string, task: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(machineId) ?? Promise.resolve();
    const result = previous.then(task, task);
    const tail = result.catch(() => undefined);
    this.tails.set(machineId, tail);
    void tail.then(() => {
      if (this.tails.get(machineId) === tail) this.tails.delete(machineId);
    });
    return result;
  }
}
