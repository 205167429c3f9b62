import { fill } from '../load-client.js';
import type { Row } from '../report.js';
import { daemonArgs, spawnServer, waitServing } from '../servers.js';
import { median, nowMs } from '../stats.js';
import { dataDirMB } from './daemon-state.js';
import { FILL_OUTPUT_BYTES } from './growth.js';
import { withServer, type BenchContext } from './context.js';

/**
 * Scenario 4: from process start to answering `status`, with a 10 MB log left by a clean SIGTERM.
 * Several starts; the median is the figure.
 */
const LOG_MB = 10;
const STARTS = 5;
export const STARTUP_MAX_TASKS = 1_000_000;
const TARGET_STARTUP_MS = 300;

/** A data directory holding a LOG_MB log, its daemon stopped by SIGTERM. */
export async function prepareStoppedLog(context: BenchContext): Promise<{ socketPath: string; dataDir: string }> {
  context.say(`start-up: filling a ${LOG_MB} MB log...`);
  return withServer(context.ours, { maxTasks: STARTUP_MAX_TASKS }, async (running) => {
    await fill({ socketPath: running.socketPath, producers: 16, seedBase: 400, outputBytes: FILL_OUTPUT_BYTES, untilOutputBytes: LOG_MB * 1e6 });
    return running;
  });
}

export async function runStartup(context: BenchContext): Promise<Row[]> {
  const scenario = `4 start-up, ${LOG_MB} MB log`;
  try {
    const { socketPath, dataDir } = await prepareStoppedLog(context);
    const startsMs: number[] = [];
    for (let run = 0; run < STARTS; run++) {
      const startedAt = nowMs();
      const daemon = spawnServer('taskhistoryd', daemonArgs({ socketPath, dataDir, maxTasks: STARTUP_MAX_TASKS }));
      try {
        await waitServing(daemon, socketPath);
        startsMs.push(nowMs() - startedAt);
      } finally {
        await daemon.stop();
      }
    }
    const sorted = [...startsMs].sort((a, b) => a - b);
    context.note(
      `4 start-up: ${STARTS} starts on a data directory of ${dataDirMB(dataDir).toFixed(1)} MB: ` +
        `${sorted.map((ms) => ms.toFixed(0)).join(', ')} ms (process spawn to the first answered status, Node's own start included).`,
    );
    return [{ scenario, metric: 'spawn to serving, median ms', ours: median(startsMs), target: { atMost: TARGET_STARTUP_MS } }];
  } catch (error) {
    context.note(`4 start-up: not measured: ${(error as Error).message.split('\n')[0]}`);
    return [{ scenario, metric: 'spawn to serving, median ms', ours: null, target: { atMost: TARGET_STARTUP_MS } }];
  }
}
