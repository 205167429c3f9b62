import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { logLongTasks, type LongTasksResult } from '../load-client.js';
import type { Row } from '../report.js';
import { shebangNodeFlags } from '../../node/shebang-flags.js';
import { DIST, daemonArgs, peakRssMB, spawnServer, waitServing, type ServerProcess } from '../servers.js';
import { median, nowMs } from '../stats.js';
import { STANDARD_OUTPUT_BYTES } from '../workload.js';
import { dataDirMB } from './daemon-state.js';
import { withServer, type BenchContext } from './context.js';

/**
 * Scenario 6: sustained long tasks. 16 producers each log STEPS_LONG steps of 1 KiB into one running
 * task (about 100 MB of output), beside a short run of 16 x STEPS_SHORT on another fresh daemon.
 * Then: the data dir's bytes over the output bytes after a clean stop, restart time to the first
 * answered `status` beside an empty daemon's, and RSS once serving. `--large` repeats the long run
 * with 10 times the steps and also times `taskhistory export` of it, with both processes' peak RSS.
 */
const PRODUCERS = 16;
const STEPS_SHORT = 750;
const STEPS_LONG = 6250;
const LARGE_FACTOR = 10;
const RESTARTS = 3;
/** Tasks run for the whole scenario: never trimmed, which is the point. */
const MAX_TASKS = 100;
const CLI_BIN = join(DIST, 'bin/taskhistory.js');

const TARGETS = {
  stepsRatio: { atLeast: 0.9 },
  p999Ratio: { atMost: 3 },
  peakRssMB: { atMost: 150 },
  peakRssLargeMB: { atMost: 200 },
  diskOverOutput: { atMost: 1.3 },
  restartRatio: { atMost: 2 },
  servingRssMB: { atMost: 120 },
  exportRssMB: { atMost: 150 },
};

interface LongRun {
  load: LongTasksResult;
  peakRssMB: number;
  diskOverOutput: number;
  restartMs: number;
  servingRssMB: number;
  export?: { seconds: number; daemonPeakRssMB: number; cliPeakRssMB: number; bytes: number };
}

export async function runSustained(context: BenchContext, large: boolean): Promise<Row[]> {
  const scenario = (label: string) => `6 sustained long tasks${label}`;
  context.say(`sustained: short run, ${PRODUCERS} x ${STEPS_SHORT} steps...`);
  const short = await withServer(context.ours, { maxTasks: MAX_TASKS }, (running) =>
    logLongTasks({ socketPath: running.socketPath, producers: PRODUCERS, stepsEach: STEPS_SHORT, seedBase: 6000 }),
  );
  const emptyRestartMs = await medianRestartMs(context, context.freshDir('sustained-empty'));
  const long = await longRun(context, STEPS_LONG, false);
  const rows: Row[] = [
    { scenario: scenario(`, ${PRODUCERS} x ${STEPS_SHORT}`), metric: 'durable steps/s', ours: short.stepsPerSecond },
    { scenario: scenario(`, ${PRODUCERS} x ${STEPS_SHORT}`), metric: 'log_step p99 ms', ours: short.latency.p99 },
    { scenario: scenario(`, ${PRODUCERS} x ${STEPS_SHORT}`), metric: 'log_step p99.9 ms', ours: short.latency.p999 },
    ...longRows(scenario(`, ${PRODUCERS} x ${STEPS_LONG}`), long, short, emptyRestartMs, TARGETS.peakRssMB),
  ];
  if (large) {
    const largeRun = await longRun(context, STEPS_LONG * LARGE_FACTOR, true);
    rows.push(...longRows(scenario(`, ${PRODUCERS} x ${STEPS_LONG * LARGE_FACTOR}`), largeRun, short, emptyRestartMs, TARGETS.peakRssLargeMB));
    const exported = largeRun.export!;
    const exportScenario = scenario(`, export of ${(exported.bytes / 1e6).toFixed(0)} MB`);
    rows.push(
      { scenario: exportScenario, metric: 'seconds', ours: exported.seconds },
      { scenario: exportScenario, metric: 'daemon peak RSS MB', ours: exported.daemonPeakRssMB, target: TARGETS.exportRssMB },
      { scenario: exportScenario, metric: 'CLI peak RSS MB', ours: exported.cliPeakRssMB, target: TARGETS.exportRssMB },
    );
  }
  return rows;
}

function longRows(scenario: string, long: LongRun, short: LongTasksResult, emptyRestartMs: number, peakTarget: Row['target']): Row[] {
  return [
    { scenario, metric: 'durable steps/s', ours: long.load.stepsPerSecond },
    { scenario, metric: 'steps/s over the short run', ours: long.load.stepsPerSecond / short.stepsPerSecond, target: TARGETS.stepsRatio },
    { scenario, metric: 'log_step p99 ms', ours: long.load.latency.p99 },
    { scenario, metric: 'log_step p99.9 ms', ours: long.load.latency.p999 },
    { scenario, metric: 'p99.9 over the short run', ours: long.load.latency.p999 / short.latency.p999, target: TARGETS.p999Ratio },
    { scenario, metric: 'peak RSS MB', ours: long.peakRssMB, target: peakTarget },
    { scenario, metric: 'data dir / output bytes', ours: long.diskOverOutput, target: TARGETS.diskOverOutput },
    { scenario, metric: 'restart to status ms', ours: long.restartMs },
    { scenario, metric: 'restart over an empty daemon', ours: long.restartMs / emptyRestartMs, target: TARGETS.restartRatio },
    { scenario, metric: 'RSS once serving MB', ours: long.servingRssMB, target: TARGETS.servingRssMB },
  ];
}

async function longRun(context: BenchContext, stepsEach: number, withExport: boolean): Promise<LongRun> {
  context.say(`sustained: long run, ${PRODUCERS} x ${stepsEach} steps...`);
  const running = await context.ours.start({ maxTasks: MAX_TASKS });
  let load: LongTasksResult;
  let peak: number;
  try {
    load = await logLongTasks({ socketPath: running.socketPath, producers: PRODUCERS, stepsEach, seedBase: 7000 });
    peak = peakRssMB(running.process.pid);
  } finally {
    await running.process.stop();
  }
  const outputBytes = load.steps * STANDARD_OUTPUT_BYTES;
  const diskOverOutput = (dataDirMB(running.dataDir) * 1e6) / outputBytes;
  const restartMs = await medianRestartMs(context, running.dataDir, running.socketPath);
  const daemon = await startServing(running.socketPath, running.dataDir);
  try {
    const servingRssMB = rssMB(daemon.pid);
    const exported = withExport ? await measureExport(context, daemon, running.socketPath) : undefined;
    return { load, peakRssMB: peak, diskOverOutput, restartMs, servingRssMB, export: exported };
  } finally {
    await daemon.stop();
  }
}

async function startServing(socketPath: string, dataDir: string): Promise<ServerProcess> {
  const daemon = spawnServer('taskhistoryd', daemonArgs({ socketPath, dataDir, maxTasks: MAX_TASKS }));
  await waitServing(daemon, socketPath, 600_000);
  return daemon;
}

/** Process spawn to the first answered `status`, the median of a few starts on the same data dir. */
async function medianRestartMs(context: BenchContext, dataDir: string, socketPath = join(dataDir, '..', 'r.sock')): Promise<number> {
  const times: number[] = [];
  for (let run = 0; run < RESTARTS; run++) {
    const startedAt = nowMs();
    const daemon = await startServing(socketPath, dataDir);
    times.push(nowMs() - startedAt);
    await daemon.stop();
  }
  context.say(`  restarts on ${dataDir}: ${times.map((ms) => ms.toFixed(0)).join(', ')} ms`);
  return median(times);
}

/** `taskhistory export > file`: its time and bytes, and the CLI's and the daemon's peak RSS meanwhile. */
async function measureExport(context: BenchContext, daemon: ServerProcess, socketPath: string): Promise<LongRun['export']> {
  context.say('sustained: taskhistory export...');
  resetPeakRss(daemon.pid);
  const outFile = join(context.freshDir('export'), 'export.json');
  const out = openSync(outFile, 'w');
  const startedAt = nowMs();
  const cli = spawn(process.execPath, [...shebangNodeFlags(CLI_BIN), CLI_BIN, '--socket', socketPath, 'export'], { stdio: ['ignore', out, 'pipe'] });
  closeSync(out);
  let stderr = '';
  cli.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  let cliPeak = 0;
  const poll = setInterval(() => {
    try {
      cliPeak = Math.max(cliPeak, peakRssMB(cli.pid!));
    } catch {
      // exited between two polls
    }
  }, 20);
  const code = await new Promise<number | null>((done) => cli.once('exit', done));
  clearInterval(poll);
  const seconds = (nowMs() - startedAt) / 1000;
  if (code !== 0) throw new Error(`taskhistory export exited with code ${code}: ${stderr.trim()}`);
  return { seconds, daemonPeakRssMB: peakRssMB(daemon.pid), cliPeakRssMB: cliPeak, bytes: statSync(outFile).size };
}

/** Makes VmHWM start again from the current RSS (Linux: `echo 5 > /proc/PID/clear_refs`). */
function resetPeakRss(pid: number): void {
  writeFileSync(`/proc/${pid}/clear_refs`, '5');
}

function rssMB(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no VmRSS line in /proc/${pid}/status`);
  return (Number(match[1]) * 1024) / 1e6;
}
