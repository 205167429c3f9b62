import { mkdir, open, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { ChainBreak, ChainWalker } from '../protocol/chain-verify.js';
import { CloudMethods } from '../protocol/cloud-methods.js';
import { isRecordLike, journalLine, journalSegmentName } from '../protocol/data-file.js';
import { fsyncDirectory } from '../node/durable-files.js';
import { CLOUD_PULL_LIMIT_MAX } from '../protocol/limits.js';
import { GENESIS_HASH, type ChainPoint, type ChainRecord } from '../protocol/records.js';
import { backoffDelay, CloudConnection, isAuthFailure } from './cloud-sync.js';
import { sha256Hex } from '../node/sha256.js';
import { existingHistory } from './data-dir.js';

/** The longest wait between two attempts to reach the cloud during restore. */
const RESTORE_RETRY_MAX_MS = 2000;
/** Once connected, a pull may take this long even when the start-up deadline is nearer. */
const MIN_PULL_TIMEOUT_MS = 5000;

export interface RestoreOptions {
  url: string;
  token: string;
  machineId: string;
  dataDir: string;
  timeoutMs: number;
}

/** The local disk failed: retrying against the cloud cannot help, and a half-written segment is discarded. */
class SegmentWriteError extends Error {}

export type RestoreOutcome = { restored: number; head: ChainPoint } | { restored: 0; skipped: string };

/**
 * Rebuilds an empty data dir from the cloud: pulls this machine's records, verifies the chain from
 * genesis, and writes them as one journal segment (temp file, fsync, rename, directory fsync) that
 * the store replays on open. Never touches a data dir that already holds a history. When the cloud
 * stays unreachable for `timeoutMs`, refuses the token or serves a chain that does not verify, it
 * writes nothing and says why.
 */
export async function restoreFromCloud(options: RestoreOptions): Promise<RestoreOutcome> {
  const { url, machineId, dataDir, timeoutMs } = options;
  const existing = existingHistory(dataDir);
  if (existing) return { restored: 0, skipped: `${dataDir} already holds ${existing}; restore only fills an empty data dir` };

  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const target = join(dataDir, journalSegmentName(1));
  const temp = `${target}.${process.pid}.restore.tmp`;
  const segment = await open(temp, 'wx', 0o600); // exclusive: never through a planted link
  let placed = false;
  try {
    const walker = new ChainWalker({ seq: 0, hash: GENESIS_HASH }, sha256Hex);
    const deadline = Date.now() + timeoutMs;
    let lastError = '';
    for (let failures = 0; ; failures++) {
      if (Date.now() >= deadline) {
        return { restored: 0, skipped: `the cloud at ${url} stayed unreachable for ${timeoutMs} ms (${lastError}); starting a fresh chain` };
      }
      try {
        await pullAll(options, deadline, walker, async (records) => {
          try {
            await segment.write(records.map(journalLine).join(''));
          } catch (error) {
            throw new SegmentWriteError(`cannot write the restored journal ${temp}: ${(error as Error).message}`);
          }
        });
        break;
      } catch (error) {
        if (error instanceof SegmentWriteError) throw error;
        if (isAuthFailure(error)) return { restored: 0, skipped: `the cloud at ${url} refused the token: ${(error as Error).message}` };
        if (error instanceof ChainBreak) {
          return { restored: 0, skipped: `the cloud's chain for machine ${machineId} does not verify at seq ${error.seq} (${error.reason}: ${error.message}); nothing restored` };
        }
        lastError = (error as Error).message;
        await sleep(Math.min(backoffDelay(failures, RESTORE_RETRY_MAX_MS), Math.max(0, deadline - Date.now())));
      }
    }
    if (walker.head.seq === 0) return { restored: 0, skipped: `the cloud at ${url} holds no records for machine ${machineId}; starting a fresh chain` };
    await segment.sync();
    await segment.close();
    await rename(temp, target);
    placed = true;
    await fsyncDirectory(dataDir);
    return { restored: walker.head.seq, head: walker.head };
  } finally {
    if (!placed) {
      await segment.close().catch(() => undefined);
      await unlink(temp).catch(() => undefined);
    }
  }
}

/**
 * Pulls every record above the walker's head, verifying each before handing it to `write`.
 * Resumes where an earlier, interrupted attempt stopped.
 */
async function pullAll(
  { url, token, machineId }: RestoreOptions,
  deadline: number,
  walker: ChainWalker,
  write: (records: ChainRecord[]) => Promise<unknown>,
): Promise<void> {
  const connection = await CloudConnection.open(url, token, Math.max(1, deadline - Date.now()));
  try {
    for (;;) {
      const timeout = Math.max(MIN_PULL_TIMEOUT_MS, deadline - Date.now());
      const page = await connection.request<{ records: unknown[]; more: boolean }>(
        CloudMethods.pull.name,
        { machine_id: machineId, after_seq: walker.head.seq, limit: CLOUD_PULL_LIMIT_MAX },
        timeout,
      );
      const records = page.records.filter(isRecordLike);
      if (records.length !== page.records.length) {
        throw new ChainBreak('changed content', walker.head.seq + 1, 'the cloud sent something that is not a chain record');
      }
      for (const record of records) walker.accept(record);
      if (records.length > 0) await write(records);
      if (!page.more || records.length === 0) return;
    }
  } finally {
    connection.close();
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
