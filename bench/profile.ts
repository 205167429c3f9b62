import { readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { measureClosedLoop } from './load-client.js';
import { withServer, type BenchContext } from './scenarios/context.js';
import { prepareStoppedLog, STARTUP_MAX_TASKS } from './scenarios/startup.js';
import { daemonArgs, spawnServer, waitServing } from './servers.js';

/**
 * `--profile`: runs the daemon under `node --cpu-prof` through the heaviest load (32 closed-loop
 * clients) and through a start-up on a 10 MB log, and prints where its CPU time goes, by function
 * and by file, so a missed target comes with what limits it.
 */
interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const PROFILE_CLIENTS = 32;
const TOP = 25;

export async function profileDaemon(context: BenchContext): Promise<string> {
  const throughputDir = context.freshDir('cpu-profile-throughput');
  context.say(`profile: daemon under --cpu-prof, ${PROFILE_CLIENTS} closed-loop clients...`);
  const result = await withServer(context.ours, { cpuProfileDir: throughputDir }, (running) =>
    measureClosedLoop({ socketPath: running.socketPath, producers: PROFILE_CLIENTS, seedBase: 100 * PROFILE_CLIENTS, warmupMs: 500, durationMs: 3000 }),
  );

  const startupDir = context.freshDir('cpu-profile-startup');
  const { socketPath, dataDir } = await prepareStoppedLog(context);
  context.say('profile: daemon start-up under --cpu-prof...');
  const daemon = spawnServer('taskhistoryd', daemonArgs({ socketPath, dataDir, maxTasks: STARTUP_MAX_TASKS }), ['--cpu-prof', `--cpu-prof-dir=${startupDir}`]);
  try {
    await waitServing(daemon, socketPath);
  } finally {
    await daemon.stop();
  }
  return [
    profileSection(`Daemon CPU profile at ${PROFILE_CLIENTS} clients (${Math.round(result.stepsPerSecond)} steps/s while profiled)`, throughputDir),
    profileSection('Daemon CPU profile of a start-up on a 10 MB log, until stopped right after serving', startupDir),
  ].join('\n\n');
}

function profileSection(title: string, profileDir: string): string {
  const file = readdirSync(profileDir).find((name) => name.endsWith('.cpuprofile'));
  if (!file) throw new Error(`the daemon wrote no .cpuprofile into ${profileDir} (did it exit cleanly on SIGTERM?)`);
  const summary = summarizeProfile(JSON.parse(readFileSync(join(profileDir, file), 'utf8')) as CpuProfile);
  return `### ${title}\n\nProfile: ${join(profileDir, file)}\n\n${summary}`;
}

/** Self time per function and per file, as Markdown tables, largest first. */
export function summarizeProfile(profile: CpuProfile): string {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const selfUs = new Map<number, number>();
  profile.samples.forEach((id, index) => selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[index] ?? 0)));
  const totalUs = [...selfUs.values()].reduce((sum, us) => sum + us, 0);

  const byFunction = new Map<string, number>();
  const byFile = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)?.callFrame;
    if (!frame) continue;
    const label = shortened(frame.functionName || '(anonymous)');
    const file = frame.url ? basename(frame.url) : `(native) ${label}`;
    const name = frame.url ? `${label} ${file}:${frame.lineNumber + 1}` : label;
    byFunction.set(name, (byFunction.get(name) ?? 0) + us);
    byFile.set(file, (byFile.get(file) ?? 0) + us);
  }
  const table = (title: string, entries: Map<string, number>) =>
    [
      `| ${title} | self ms | share |`,
      '|---|---|---|',
      ...[...entries]
        .sort((a, b) => b[1] - a[1])
        .slice(0, TOP)
        .map(([name, us]) => `| ${name} | ${(us / 1000).toFixed(0)} | ${((100 * us) / totalUs).toFixed(1)}% |`),
    ].join('\n');
  return `${table('function', byFunction)}\n\n${table('file', byFile)}\n\nTotal sampled: ${(totalUs / 1000).toFixed(0)} ms.`;
}

/** V8 names a regular expression by its whole source; a table cell needs less. */
function shortened(name: string): string {
  const text = name.replace(/\|/g, '\\|');
  return text.length > 60 ? `${text.slice(0, 60)}…` : text;
}
