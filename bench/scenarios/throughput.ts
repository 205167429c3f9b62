import { measureClosedLoop, type ThroughputResult } from '../load-client.js';
import type { Row } from '../report.js';
import type { Framing } from '../rpc-socket.js';
import { peakRssMB } from '../servers.js';
import { measureEach, rowOf, withServer, type BenchContext, type Contender, type Outcomes } from './context.js';

/**
 * Scenario 1: closed-loop producers (1, 8, 32), tasks of 20 steps with 1 KiB outputs, against one
 * server per contender at default settings: over WebSocket ours, the floor and every peer; over
 * newline JSON ours and the newline floor. Also reads the daemon's peak RSS (WebSocket run).
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
  const overWebSocket = await measureFraming(context, [context.ours, context.floor, ...context.peers], 'websocket', cpuProfileDir);
  const overNewline = await measureFraming(context, [context.ours, context.floor], 'newline');
  const rows = [...rowsOf(overWebSocket, ''), ...rowsOf(overNewline, ', newline JSON')];
  const peakRssRow = rowOf('4 memory, during 1', 'peak RSS MB', overWebSocket, (o) => o.peakRssMB, { atMost: TARGET_PEAK_RSS_MB });
  return { rows, peakRssRow };
}

function measureFraming(context: BenchContext, contenders: Contender[], framing: Framing, cpuProfileDir?: string): Promise<Outcomes<ThroughputOutcome>> {
  return measureEach(context, contenders, `throughput (${framing})`, (contender) =>
    withServer(contender, { framing, cpuProfileDir: contender.name === 'ours' ? cpuProfileDir : undefined }, async (running): Promise<ThroughputOutcome> => {
      const byClients = new Map<number, ThroughputResult>();
      for (const clients of CLIENT_COUNTS) {
        byClients.set(
          clients,
          await measureClosedLoop({ socketPath: running.socketPath, framing, producers: clients, seedBase: 100 * clients, warmupMs: WARMUP_MS, durationMs: WINDOW_MS }),
        );
      }
      return { byClients, peakRssMB: peakRssMB(running.process.pid) };
    }),
  );
}

function rowsOf(outcomes: Outcomes<ThroughputOutcome>, framingLabel: string): Row[] {
  return CLIENT_COUNTS.flatMap((clients) => {
    const scenario = `1 throughput${framingLabel}, ${clients} client${clients === 1 ? '' : 's'}`;
    const target = framingLabel ? undefined : TARGET_STEPS_PER_S[clients];
    const of = (figure: (result: ThroughputResult) => number) => (outcome: ThroughputOutcome) => figure(outcome.byClients.get(clients)!);
    return [
      rowOf(scenario, 'durable steps/s', outcomes, of((r) => r.stepsPerSecond), target ? { atLeast: target } : undefined),
      rowOf(scenario, 'log_step p50 ms', outcomes, of((r) => r.latency.p50)),
      rowOf(scenario, 'log_step p99 ms', outcomes, of((r) => r.latency.p99)),
      rowOf(scenario, 'log_step p99.9 ms', outcomes, of((r) => r.latency.p999)),
    ];
  });
}
