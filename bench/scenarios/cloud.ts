import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fill, measureOpenLoop } from '../load-client.js';
import type { Row } from '../report.js';
import { RpcSocket } from '../rpc-socket.js';
import { CLOUD_BIN, daemonArgs, spawnServer, startCloud, waitServing, type ServerProcess } from '../servers.js';
import { nowMs, summarize, type LatencySummary } from '../stats.js';
import type { StatusResult } from '../../protocol/methods.js';
import { pollStatus } from './daemon-state.js';
import { withServer, type BenchContext } from './context.js';

/**
 * Scenario 5: a backlog of 100,000 records, committed while no cloud was configured, drained to a
 * local taskhistory-cloud once the daemon restarts with it; then, online, the lag from a step's
 * commit (its answer) to the cloud's acknowledgement (status.cloud.acked_seq reaching its seq).
 */
const BACKLOG_RECORDS = 100_000;
/** Small outputs: the backlog measures records/s, and 100,000 of them must load in seconds. */
const BACKLOG_OUTPUT_BYTES = 256;
const MAX_TASKS = 1_000_000;
/** A slow daemon must not stretch the run past its budget: fill for at most this long. */
const BACKLOG_FILL_LIMIT_MS = 45_000;
const LAG_STEPS_PER_S = 1000;
const LAG_DURATION_MS = 4000;
/** How often the daemon's acked_seq is read: the lag's resolution. */
const ACK_POLL_MS = 5;
const TARGET_DRAIN_PER_S = 20_000;
const TARGET_LAG_P99_MS = 100;

interface CloudOutcome {
  drainPerSecond: number;
  lag: LatencySummary;
}

export async function runCloud(context: BenchContext): Promise<Row[]> {
  let outcome: CloudOutcome | null = null;
  if (!existsSync(CLOUD_BIN)) context.note(`5 cloud: not measured: ${CLOUD_BIN} is not built.`);
  else {
    try {
      outcome = await measureCloud(context);
    } catch (error) {
      context.note(`5 cloud: not measured: ${(error as Error).message.split('\n')[0]}`);
    }
  }
  return [
    { scenario: `5 cloud drain, ${BACKLOG_RECORDS.toLocaleString('en-US')} records`, metric: 'records/s', ours: outcome?.drainPerSecond ?? null, target: { atLeast: TARGET_DRAIN_PER_S } },
    { scenario: `5 cloud lag at ${LAG_STEPS_PER_S.toLocaleString('en-US')} steps/s`, metric: 'commit to ack p50 ms', ours: outcome?.lag.p50 ?? null },
    { scenario: `5 cloud lag at ${LAG_STEPS_PER_S.toLocaleString('en-US')} steps/s`, metric: 'commit to ack p99 ms', ours: outcome?.lag.p99 ?? null, target: { atMost: TARGET_LAG_P99_MS } },
  ];
}

async function measureCloud(context: BenchContext): Promise<CloudOutcome> {
  const dir = context.freshDir('cloud');
  const tokensFile = join(dir, 'tokens.json');
  const tokenFile = join(dir, 'token');
  const token = 'bench-token-0123456789abcdef';
  writeFileSync(tokensFile, JSON.stringify({ tokens: [{ token, machine_id: 'bench' }] }), { mode: 0o600 });
  writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });

  context.say(`cloud: committing a backlog of ${BACKLOG_RECORDS.toLocaleString('en-US')} records with no cloud configured...`);
  const { socketPath, dataDir } = await withServer(context.ours, { maxTasks: MAX_TASKS }, async (running) => {
    const deadlineMs = nowMs() + BACKLOG_FILL_LIMIT_MS;
    const filled = await fill({ socketPath: running.socketPath, producers: 32, seedBase: 500, outputBytes: BACKLOG_OUTPUT_BYTES, untilRecords: BACKLOG_RECORDS, deadlineMs });
    if (filled.records < BACKLOG_RECORDS) {
      context.note(`5 cloud: the backlog stopped at ${filled.records} records after ${BACKLOG_FILL_LIMIT_MS / 1000} s of filling (to keep the run short); the drain rate is over those.`);
    }
    return running;
  });

  const { cloud, url } = await startCloud({ dataDir: join(dir, 'cloud-data'), tokensFile });
  let daemon: ServerProcess | null = null;
  try {
    context.say('cloud: restarting the daemon with the cloud configured and timing the drain...');
    daemon = spawnServer('taskhistoryd', daemonArgs({ socketPath, dataDir, maxTasks: MAX_TASKS, cloudUrl: url, cloudTokenFile: tokenFile }));
    await waitServing(daemon, socketPath);
    const socket = await RpcSocket.open(socketPath);
    try {
      const drainStart = nowMs();
      const stuck = new Set(['auth_failed', 'fork']);
      const drained = await pollStatus(socket, (s) => s.cloud.acked_seq >= s.last_seq || stuck.has(s.cloud.state), 120_000);
      if (drained.status.cloud.acked_seq < drained.status.last_seq) {
        throw new Error(`after ${((drained.atMs - drainStart) / 1000).toFixed(0)} s the cloud had acknowledged seq ${drained.status.cloud.acked_seq} of ${drained.status.last_seq} (state ${drained.status.cloud.state}, ${drained.status.cloud.last_error ?? 'no error'})`);
      }
      const drainPerSecond = drained.status.last_seq / ((drained.atMs - drainStart) / 1000);
      context.say('cloud: measuring commit-to-acknowledgement lag...');
      const lag = await measureLag(socket, socketPath);
      return { drainPerSecond, lag };
    } finally {
      socket.close();
    }
  } finally {
    await daemon?.stop();
    await cloud.stop();
  }
}

/** Offers steps on a schedule while a second connection watches acked_seq; each step's lag is ack seen minus answer. */
async function measureLag(statusSocket: RpcSocket, socketPath: string): Promise<LatencySummary> {
  const committedAt = new Map<number, number>();
  const lags: number[] = [];
  let sending = true;
  let giveUpAt = Infinity;
  const watcher = (async () => {
    while (sending || (committedAt.size > 0 && nowMs() < giveUpAt)) {
      const status = await statusSocket.call<StatusResult>('status');
      const seenAt = nowMs();
      for (const [seq, at] of committedAt) {
        if (seq > status.cloud.acked_seq) continue;
        lags.push(Math.max(0, seenAt - at));
        committedAt.delete(seq);
      }
      await new Promise((resolve) => setTimeout(resolve, ACK_POLL_MS));
    }
  })();
  try {
    await measureOpenLoop({
      socketPath,
      ratePerSecond: LAG_STEPS_PER_S,
      durationMs: LAG_DURATION_MS,
      connections: 8,
      seedBase: 5000,
      maxBacklog: LAG_STEPS_PER_S,
      onCommitted: (seq, answeredAt) => committedAt.set(seq, answeredAt),
    });
  } finally {
    giveUpAt = nowMs() + 10_000;
    sending = false;
    await watcher;
  }
  if (committedAt.size > 0) throw new Error(`${committedAt.size} committed steps were not acknowledged by the cloud within 10 s`);
  return summarize(lags);
}
