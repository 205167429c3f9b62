import { measureClosedLoop, type ThroughputResult } from '../load-client.js';
import type { Row } from '../report.js';
import { peakRssMB } from '../servers.js';
import { measureEach, rowOf, withServer, type BenchContext } from './context.js';

/**
 * Scenario 1: closed-loop producers (1, 8, 32), tasks of 20 steps with 1 KiB outputs, against one
 * server per contender at default settings. Also reads the daemon's peak RSS once it is done.
 */
export const CLIENT_COUNTS = [1, 8, 32] as const;
const TARGET_STEPS_PER_S: Partial<Record<number, number>> = { 8: 12_000, 32: 20_000 };
const WARMUP_MS = 500;
const WINDOW_MS = 3000;

interface ThroughputOutcome {
  byClients: Map<number, ThroughputResult>;
  peakRssMB: number;
}

const TARGET_PEAK_RSS_MB = 150;

/** Returns the scenario's rows and, apart, the peak RSS row (reported with scenario 4). */
export async function runThroughput(context: BenchContext, cpuProfileDir?: string): Promise<{ rows: Row[]; peakRssRow: Row }> {
  const outcomes = await measureEach(context, context.contenders, 'throughput', (contender) =>
    withServer(contender, { cpuProfileDir: contender.name === 'ours' ? cpuProfileDir : undefined }, async (running): Promise<ThroughputOutcome> => {
      const byClients = new Map<number, ThroughputResult>();
      for (const clients of CLIENT_COUNTS) {
        byClients.set(
          clients,
          await measureClosedLoop({ socketPath: running.socketPath, producers: clients, seedBase: 100 * clients, warmupMs: WARMUP_MS, durationMs: WINDOW_MS }),
        );
      }
      return { byClients, peakRssMB: peakRssMB(running.process.pid) };
    }),
  );
  const rows = CLIENT_COUNTS.flatMap((clients) => {
    const scenario = `1 throughput, ${clients} client${clients === 1 ? '' : 's'}`;
    const target = TARGET_STEPS_PER_S[clients];
    const of = (figure: (result: ThroughputResult) => number) => (outcome: ThroughputOutcome) => figure(outcome.byClients.get(clients)!);
    return [
      rowOf(scenario, 'durable steps/s', outcomes, of((r) => r.stepsPerSecond), target ? { atLeast: target } : undefined),
      rowOf(scenario, 'log_step p50 ms', outcomes, of((r) => r.latency.p50)),
      rowOf(scenario, 'log_step p99 ms', outcomes, of((r) => r.latency.p99)),
      rowOf(scenario, 'log_step p99.9 ms', outcomes, of((r) => r.latency.p999)),
    ];
  });
  const peakRssRow = rowOf('4 memory, during 1', 'peak RSS MB', outcomes, (o) => o.peakRssMB, { atMost: TARGET_PEAK_RSS_MB });
  return { rows, peakRssRow };
}
