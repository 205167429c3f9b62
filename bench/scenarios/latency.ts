import { measureOpenLoop, type OpenLoopResult } from '../load-client.js';
import type { Row, Target } from '../report.js';
import { measureEach, rowOf, withServer, type BenchContext } from './context.js';

/**
 * Scenario 2: log_step latency at a fixed offered load (open loop), 1 KiB outputs over 8
 * connections. max_tasks is raised so the tasks made up front are not trimmed mid-run.
 */
export const OFFERED_STEPS_PER_S = 1000;
const DURATION_MS = 4000;
const CONNECTIONS = 8;
/** A second of offered load waiting: the server cannot keep up, stop offering more. */
const MAX_BACKLOG = OFFERED_STEPS_PER_S;
/** p99 at most 2 ms (the engine issue) and at most SQLite's in the same run (the per-step speed issue). */
const TARGET_P99 = { atMost: 2, against: [{ peer: 'sqlite', atMost: 1 }] } satisfies Target;

export async function runLatency(context: BenchContext): Promise<Row[]> {
  const outcomes = await measureEach(context, [context.ours, context.floor, ...context.peers], 'open-loop latency', (contender) =>
    withServer(contender, { maxTasks: 100_000 }, async (running): Promise<OpenLoopResult> => {
      const result = await measureOpenLoop({
        socketPath: running.socketPath,
        ratePerSecond: OFFERED_STEPS_PER_S,
        durationMs: DURATION_MS,
        connections: CONNECTIONS,
        seedBase: 2000,
        maxBacklog: MAX_BACKLOG,
      });
      if (result.saturated) {
        context.note(
          `2 open loop, ${contender.name}: could not sustain ${OFFERED_STEPS_PER_S} steps/s (${MAX_BACKLOG} steps waiting after ` +
            `${result.sent} sent, ${Math.round(result.achievedPerSecond)} steps/s answered); its latencies are those of a saturated server.`,
        );
      }
      return result;
    }),
  );
  const scenario = `2 open loop, ${OFFERED_STEPS_PER_S.toLocaleString('en-US')} steps/s`;
  return [
    rowOf(scenario, 'log_step p50 ms', outcomes, (r) => r.latency.p50),
    rowOf(scenario, 'log_step p99 ms', outcomes, (r) => r.latency.p99, TARGET_P99),
  ];
}
