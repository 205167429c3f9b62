import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { SqliteDatabaseConstructor } from './sqlite.js';

/**
 * better-sqlite3 is a native module and no runtime dependency of ours: the benchmark installs it on
 * demand into a cache outside the repository (TASKHISTORY_BENCH_CACHE, else
 * $XDG_CACHE_HOME/taskhistory-bench) and loads it from there.
 */
const PACKAGE = 'better-sqlite3@12';

export function sqliteModuleDir(): string {
  const cache = process.env.TASKHISTORY_BENCH_CACHE || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'taskhistory-bench');
  return join(cache, 'sqlite');
}

export function loadBetterSqlite(moduleDir: string): SqliteDatabaseConstructor {
  return createRequire(join(moduleDir, 'package.json'))('better-sqlite3') as SqliteDatabaseConstructor;
}

/** The module dir once better-sqlite3 loads from it, installing it first when needed; else why not. */
export function ensureBetterSqlite(say: (line: string) => void): { moduleDir: string } | { unavailable: string } {
  const moduleDir = sqliteModuleDir();
  if (loadProblem(moduleDir) === null) return { moduleDir };
  say(`installing ${PACKAGE} into ${moduleDir} for the SQLite peer (it compiles from source: about a minute)...`);
  mkdirSync(moduleDir, { recursive: true });
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const install = spawnSync(npm, ['install', '--no-save', '--no-audit', '--no-fund', '--prefix', moduleDir, PACKAGE], {
    encoding: 'utf8',
    timeout: 10 * 60_000,
  });
  if (install.error || install.status !== 0) {
    const output = `${install.stdout ?? ''}${install.stderr ?? ''}`.trim().split('\n').slice(-5).join('\n');
    return { unavailable: `npm install ${PACKAGE} into ${moduleDir} failed (${install.error?.message ?? `exit ${install.status}`}): ${output}` };
  }
  const problem = loadProblem(moduleDir);
  return problem === null ? { moduleDir } : { unavailable: `${PACKAGE} installed into ${moduleDir} but does not load: ${problem}` };
}

function loadProblem(moduleDir: string): string | null {
  try {
    const Database = loadBetterSqlite(moduleDir);
    new Database(':memory:').close();
    return null;
  } catch (error) {
    return (error as Error).message;
  }
}
