import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { machineConditions } from './calibrate.js';
import { ensureBetterSqlite } from './peers/sqlite-install.js';
import type { PeerKind } from './peers/store.js';
import { profileDaemon } from './profile.js';
import { environmentLine, renderReport, writeResults, type Row } from './report.js';
import { runCloud } from './scenarios/cloud.js';
import { runFleet } from './scenarios/fleet.js';
import { createContext } from './scenarios/context.js';
import { runGrowth } from './scenarios/growth.js';
import { runLatency } from './scenarios/latency.js';
import { runStartup } from './scenarios/startup.js';
import { runSustained } from './scenarios/sustained.js';
import { runThroughput } from './scenarios/throughput.js';
import { DAEMON_BIN } from './servers.js';
import { nowMs } from './stats.js';

/**
 * `npm run bench`: every scenario against the real daemon over its Unix socket, beside the peers,
 * then the table on stdout and in bench/results/latest.md.
 *
 *   --only 1,3      run only these scenarios (1 throughput, 2 open-loop latency, 3 cost growth,
 *                   4 start-up and peak RSS (RSS needs 1), 5 cloud, 6 sustained long tasks,
 *                   7 fleet tier on PostgreSQL)
 *   --large         scenario 6 also with 10 times the steps (about 1 GB of output) and its export
 *   --no-peers      ours only
 *   --profile       also profile the daemon at 32 clients and append where its CPU time goes
 *   --results FILE  where to write the table (default bench/results/latest.md)
 */
const REPO = resolve(import.meta.dirname, '../..');

const { values: options } = parseArgs({
  options: {
    only: { type: 'string' },
    'no-peers': { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    large: { type: 'boolean', default: false },
    results: { type: 'string', default: join(REPO, 'bench/results/latest.md') },
  },
});

const say = (line: string) => process.stderr.write(`${line}\n`);

function selectedScenarios(): Set<number> {
  if (!options.only) return new Set([1, 2, 3, 4, 5, 6, 7]);
  const chosen = options.only.split(',').map(Number);
  if (chosen.some((n) => !Number.isInteger(n) || n < 1 || n > 7)) throw new Error(`--only takes scenario numbers 1-7, e.g. --only 1,3; got ${options.only}`);
  return new Set(chosen);
}

function availablePeers(notes: string[]): { kinds: PeerKind[]; sqliteModuleDir?: string } {
  if (options['no-peers']) return { kinds: [] };
  const sqlite = ensureBetterSqlite(say);
  if ('unavailable' in sqlite) {
    notes.push(`SQLite peer unavailable: ${sqlite.unavailable}`);
    return { kinds: ['json-fsync', 'json-nofsync'] };
  }
  return { kinds: ['sqlite', 'json-fsync', 'json-nofsync'], sqliteModuleDir: sqlite.moduleDir };
}

async function main(): Promise<void> {
  if (!existsSync(DAEMON_BIN)) throw new Error(`${DAEMON_BIN} does not exist: build first (npm run build), or run npm run bench, which builds`);
  const scenarios = selectedScenarios();
  const startedAt = new Date();
  const start = nowMs();
  const notes: string[] = [];
  const peers = availablePeers(notes);
  const workDir = mkdtempSync(join(tmpdir(), 'taskhistory-bench-'));
  const conditions = machineConditions(workDir);
  say(conditions.line);
  if (conditions.busy) notes.push(`The machine was busy when the run began (${conditions.line}): other work shares the CPUs and the disk, so the figures are low.`);
  const context = createContext({ workDir, peerKinds: peers.kinds, sqliteModuleDir: peers.sqliteModuleDir, say, note: (text) => notes.push(text) });
  const rows: Row[] = [];
  let peakRssRow: Row | undefined;
  try {
    if (scenarios.has(1)) {
      const throughput = await runThroughput(context);
      rows.push(...throughput.rows);
      peakRssRow = throughput.peakRssRow;
    }
    if (scenarios.has(2)) rows.push(...(await runLatency(context)));
    if (scenarios.has(3)) rows.push(...(await runGrowth(context)));
    if (scenarios.has(4)) rows.push(...(await runStartup(context)), ...(peakRssRow ? [peakRssRow] : []));
    if (scenarios.has(5)) rows.push(...(await runCloud(context)));
    if (scenarios.has(6)) rows.push(...(await runSustained(context, options.large)));
    if (scenarios.has(7)) rows.push(...(await runFleet(context)));
    const profile = options.profile ? await profileDaemon(context) : null;

    const report = renderReport(rows, notes, `${environmentLine(startedAt, (nowMs() - start) / 1000)}; ${conditions.line}`);
    const text = profile ? `${report}\n${profile}\n` : report;
    process.stdout.write(text);
    writeResults(options.results, text);
    say(`results written to ${options.results}`);
  } finally {
    if (!options.profile) rmSync(workDir, { recursive: true, force: true });
  }
}

main().catch((error: Error) => {
  say(`bench: ${error.message}`);
  process.exit(1);
});
