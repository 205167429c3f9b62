import { setTimeout as sleep } from 'node:timers/promises';
import { combineWindows, fill, measureClosedLoop, type ThroughputResult } from '../load-client.js';
import type { Row } from '../report.js';
import { STANDARD_OUTPUT_BYTES } from '../workload.js';
import { dataDirMB } from './daemon-state.js';
import { measureEach, rowOf, withServer, type BenchContext, type Contender, type Running } from './context.js';

/**
 * Scenario 3: does a step cost more when the log is large? The log is brought to each size (ours
 * through its own socket, since the file is a hash chain; peers prefilled at start), then a light
 * closed-loop probe measures log_step latency. max_tasks is raised so nothing is trimmed. The probe
 * is two windows with a pause between them longer than the idle checkpoint delay: ours then
 * rewrites its data file (the fill's journal folded in) while the second window runs, so the
 * probe includes a checkpoint of the whole log at each size; peers get the same pause.
 */
export const LOG_SIZES_MB = [0.1, 1, 10, 50] as const;
/** Fill with large outputs so 50 MB loads in seconds, yet thousands of records. */
export const FILL_OUTPUT_BYTES = 8 * 1024;
const PROBE_WINDOW = { producers: 1, minSteps: 5, maxSteps: 200, durationMs: 1500 };
/** The daemon's idle checkpoint delay in this scenario, and the pause that lets it start. */
const CHECKPOINT_IDLE_MS = 300;
const PAUSE_MS = CHECKPOINT_IDLE_MS + 200;
const MAX_TASKS = 1_000_000;
const TARGET_GROWTH_RATIO = 1.5;

interface GrowthOutcome {
  bySize: Map<number, ThroughputResult>;
  /** Ours only: what the data directory held on disk at each size. */
  diskMB?: Map<number, number>;
}

const bytesOf = (megabytes: number) => Math.round(megabytes * 1e6);

async function probe(running: Running, sizeIndex: number): Promise<ThroughputResult> {
  const before = await measureClosedLoop({ socketPath: running.socketPath, seedBase: 3000 + sizeIndex, warmupMs: 0, ...PROBE_WINDOW });
  await sleep(PAUSE_MS);
  const during = await measureClosedLoop({ socketPath: running.socketPath, seedBase: 3500 + sizeIndex, warmupMs: 0, ...PROBE_WINDOW });
  return combineWindows([before, during]);
}

/** Ours: one daemon, filled up to each size in turn, the probes' own steps counted in. */
async function measureOurs(running: Running): Promise<GrowthOutcome> {
  const outcome = { bySize: new Map<number, ThroughputResult>(), diskMB: new Map<number, number>() };
  let held = 0;
  for (const [index, sizeMB] of LOG_SIZES_MB.entries()) {
    const missing = bytesOf(sizeMB) - held;
    if (missing > 0) {
      const producers = Math.min(16, Math.max(1, Math.round(missing / 1e6)));
      const filled = await fill({ socketPath: running.socketPath, producers, seedBase: 300 + index * 16, outputBytes: FILL_OUTPUT_BYTES, untilOutputBytes: missing });
      held += filled.outputBytes;
    }
    outcome.diskMB.set(sizeMB, dataDirMB(running.dataDir));
    const result = await probe(running, index);
    held += result.steps * STANDARD_OUTPUT_BYTES;
    outcome.bySize.set(sizeMB, result);
  }
  return outcome;
}

/** A peer: one fresh server per size, prefilled with the same kind of records before it serves. */
async function measurePeer(context: BenchContext, peer: Contender): Promise<GrowthOutcome> {
  const outcome: GrowthOutcome = { bySize: new Map() };
  for (const [index, sizeMB] of LOG_SIZES_MB.entries()) {
    const prefill = { maxTasks: MAX_TASKS, prefillOutputBytes: bytesOf(sizeMB), prefillOutputSize: FILL_OUTPUT_BYTES };
    outcome.bySize.set(sizeMB, await withServer(peer, prefill, (running) => probe(running, index)));
    context.say(`  ${peer.name} at ${sizeMB} MB done`);
  }
  return outcome;
}

export async function runGrowth(context: BenchContext): Promise<Row[]> {
  const outcomes = await measureEach(context, context.contenders, 'cost growth', (contender) =>
    contender.name === 'ours' ? withServer(contender, { maxTasks: MAX_TASKS, checkpointIdleMs: CHECKPOINT_IDLE_MS }, measureOurs) : measurePeer(context, contender),
  );
  const ours = outcomes.get('ours');
  if (ours?.diskMB) {
    const diskMB = ours.diskMB;
    const sizes = LOG_SIZES_MB.map((sizeMB) => `${diskMB.get(sizeMB)?.toFixed(1)} MB`).join(', ');
    context.note(`3 cost growth, ours: the data directory held ${sizes} on disk (checkpoint plus journal) when each probe began; each probe's second window ran while the file was rewritten.`);
  }
  const smallest = LOG_SIZES_MB[0];
  const largest = LOG_SIZES_MB[LOG_SIZES_MB.length - 1];
  const rows = LOG_SIZES_MB.flatMap((sizeMB) => {
    const scenario = `3 log holds ${sizeMB} MB`;
    return [
      rowOf(scenario, 'log_step p50 ms', outcomes, (o) => o.bySize.get(sizeMB)!.latency.p50),
      rowOf(scenario, 'log_step p99 ms', outcomes, (o) => o.bySize.get(sizeMB)!.latency.p99),
    ];
  });
  const ratio = (figure: (r: ThroughputResult) => number) => (o: GrowthOutcome) => figure(o.bySize.get(largest)!) / figure(o.bySize.get(smallest)!);
  rows.push(
    rowOf(`3 growth ${largest} / ${smallest} MB`, 'p50 ratio', outcomes, ratio((r) => r.latency.p50), { atMost: TARGET_GROWTH_RATIO }),
    rowOf(`3 growth ${largest} / ${smallest} MB`, 'p99 ratio', outcomes, ratio((r) => r.latency.p99), { atMost: TARGET_GROWTH_RATIO }),
  );
  return rows;
}
