import { measureClosedLoop, type ThroughputResult } from '../load-client.js';
import type { RatioTarget, Row } from '../report.js';
import type { Framing } from '../rpc-socket.js';
import { cpuTimeMs, peakRssMB } from '../servers.js';
import { measureEach, rowOf, withServer, type BenchContext, type Contender, type Outcomes } from './context.js';

/**
 * Scenario 1: closed-loop producers (1, 8, 32), tasks of 20 steps with 1 KiB outputs, against one
 * server per contender at default settings: over WebSocket ours, the floor and every peer; over
 * newline JSON ours and the newline floor. Also reads each server's CPU time per step in the
 * measured window (what limits throughput when server and load generator share 2 cores) and the
 * daemon's peak RSS (WebSocket run).
 */
export const CLIENT_COUNTS = [1, 8, 32] as const;
/**
 * The targets of the per-step speed issue, as ratios against the floor and SQLite in the same run:
 * steps/s at least 0.9x the floor's (over newline JSON at 8 and 32 clients), and 1.2x SQLite's
 * with 1 client, 2x with 8 and 32; log_step p99 at most 1.5x SQLite's at 1 and 8 clients and
 * 1.5x the floor's at 32.
 */
const STEPS_TARGETS: Record<number, RatioTarget[]> = {
  1: [{ peer: 'floor', atLeast: 0.9 }, { peer: 'sqlite', atLeast: 1.2 }],
  8: [{ peer: 'floor', atLeast: 0.9 }, { peer: 'sqlite', atLeast: 2 }],
  32: [{ peer: 'floor', atLeast: 0.9 }, { peer: 'sqlite', atLeast: 2 }],
};
const NEWLINE_STEPS_TARGETS: Partial<Record<number, RatioTarget[]>> = { 8: [{ peer: 'floor', atLeast: 0.9 }], 32: [{ peer: 'floor', atLeast: 0.9 }] };
const P99_TARGETS: Record<number, RatioTarget[]> = { 1: [{ peer: 'sqlite', atMost: 1.5 }], 8: [{ peer: 'sqlite', atMost: 1.5 }], 32: [{ peer: 'floor', atMost: 1.5 }] };
const WARMUP_MS = 500;
const WINDOW_MS = 3000;

interface ClientsOutcome extends ThroughputResult {
  /** The server's user and system CPU time in the measured window, over the steps answered in it. */
  serverCpuUsPerStep: number;
}

interface ThroughputOutcome {
  byClients: Map<number, ClientsOutcome>;
  peakRssMB: number;
}

const TARGET_PEAK_RSS_MB = 100;

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
      const byClients = new Map<number, ClientsOutcome>();
      const pid = running.process.pid;
      for (const clients of CLIENT_COUNTS) {
        const cpuAt = { open: 0, close: 0 };
        const result = await measureClosedLoop({
          socketPath: running.socketPath,
          framing,
          producers: clients,
          seedBase: 100 * clients,
          warmupMs: WARMUP_MS,
          durationMs: WINDOW_MS,
          onWindowEdge: (edge) => (cpuAt[edge] = cpuTimeMs(pid)),
        });
        byClients.set(clients, { ...result, serverCpuUsPerStep: (1000 * (cpuAt.close - cpuAt.open)) / result.steps });
      }
      return { byClients, peakRssMB: peakRssMB(pid) };
    }),
  );
}

function rowsOf(outcomes: Outcomes<ThroughputOutcome>, framingLabel: string): Row[] {
  return CLIENT_COUNTS.flatMap((clients) => {
    const scenario = `1 throughput${framingLabel}, ${clients} client${clients === 1 ? '' : 's'}`;
    const stepsTarget = framingLabel ? NEWLINE_STEPS_TARGETS[clients] : STEPS_TARGETS[clients];
    const p99Target = framingLabel ? undefined : P99_TARGETS[clients];
    const of = (figure: (result: ClientsOutcome) => number) => (outcome: ThroughputOutcome) => figure(outcome.byClients.get(clients)!);
    return [
      rowOf(scenario, 'durable steps/s', outcomes, of((r) => r.stepsPerSecond), stepsTarget && { against: stepsTarget }),
      rowOf(scenario, 'log_step p50 ms', outcomes, of((r) => r.latency.p50)),
      rowOf(scenario, 'log_step p99 ms', outcomes, of((r) => r.latency.p99), p99Target && { against: p99Target }),
      rowOf(scenario, 'log_step p99.9 ms', outcomes, of((r) => r.latency.p999)),
      rowOf(scenario, 'server CPU µs per step', outcomes, of((r) => r.serverCpuUsPerStep)),
    ];
  });
}
