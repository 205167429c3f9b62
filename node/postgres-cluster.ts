import { execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

/**
 * A throwaway PostgreSQL cluster for one test file (test/postgres-harness.ts) or one bench run (development tooling the tests and the bench share): initdb into a temp dir as
 * the `postgres` user (initdb refuses root), a Unix socket in that dir and no TCP port, one database
 * per site. Stopped by pid and removed at the end, and at process exit whatever happens.
 */
export interface PostgresCluster {
  socketDir: string;
  /** A fresh empty database; returns its URL. */
  createDatabase(): Promise<string>;
  /** Stops the server (fast: connections are cut), keeping the data; start() brings it back. */
  stop(): void;
  start(): void;
  /** Stops the server and removes the cluster. */
  destroy(): void;
}

/** The newest installed PostgreSQL's bin dir (`/usr/lib/postgresql/<version>/bin`), or null. */
export function postgresBinDir(): string | null {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return null;
  const versions = readdirSync(root)
    .filter((version) => existsSync(join(root, version, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a));
  return versions.length ? join(root, versions[0], 'bin') : null;
}

const asPostgres = (bin: string, args: string[]) => execFileSync('runuser', ['-u', 'postgres', '--', bin, ...args], { stdio: 'pipe' });

export function startPostgres(options: { durable?: boolean } = {}): PostgresCluster {
  const bin = postgresBinDir();
  if (!bin) throw new Error('no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: apt-get install -y postgresql');
  const dir = mkdtempSync(join(tmpdir(), 'taskhistory-pg-'));
  const { uid, gid } = postgresIds();
  chownSync(dir, uid, gid);
  const dataDir = join(dir, 'data');
  asPostgres(join(bin, 'initdb'), ['-D', dataDir, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8', '--locale', 'C.UTF-8']);
  // Tests do not test PostgreSQL's own durability: without fsync the suite runs faster. The bench keeps it.
  const settings = [`-c listen_addresses=''`, `-k ${dir}`, '-c max_connections=300', ...(options.durable ? [] : ['-c fsync=off', '-c synchronous_commit=off', '-c full_page_writes=off'])];
  let pid: number | null = null;
  const killAtExit = () => {
    if (pid !== null) process.kill(pid, 'SIGQUIT');
  };
  let databases = 0;
  const cluster: PostgresCluster = {
    socketDir: dir,
    async createDatabase() {
      const name = `site_${++databases}`;
      const admin = new pg.Client({ host: dir, user: 'postgres', database: 'postgres' });
      await admin.connect();
      try {
        await admin.query(`CREATE DATABASE ${name}`);
      } finally {
        await admin.end();
      }
      return `postgresql://postgres@localhost/${name}?host=${dir}`;
    },
    start() {
      asPostgres(join(bin, 'pg_ctl'), ['-D', dataDir, '-l', join(dir, 'server.log'), '-w', 'start', '-o', settings.join(' ')]);
      pid = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
      process.once('exit', killAtExit);
    },
    stop() {
      if (pid === null) return;
      asPostgres(join(bin, 'pg_ctl'), ['-D', dataDir, '-m', 'fast', '-w', 'stop']);
      process.off('exit', killAtExit);
      pid = null;
    },
    destroy() {
      try {
        cluster.stop();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
  cluster.start();
  return cluster;
}

function postgresIds(): { uid: number; gid: number } {
  const [uid, gid] = ['-u', '-g'].map((flag) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim()));
  return { uid, gid };
}
