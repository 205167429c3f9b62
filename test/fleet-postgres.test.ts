import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { sha256Hex } from '../node/sha256.js';
import { ChainWalker } from '../protocol/chain-verify.js';
import { ErrorCodes } from '../protocol/errors.js';
import type { StatusResult } from '../protocol/methods.js';
import { GENESIS_HASH, type ChainRecord } from '../protocol/records.js';
import { postgresBackend, storedRecordCount } from './cloud-backends.js';
import { errorOf, httpGet, makeChain, openCloudSocket, pullAll, startCloud, upgradeAnswer, writeTokensFile, type Cloud, type StorageSite } from './cloud-harness.js';
import { CLOUD_BIN, openRawSocket, startDaemon, type Daemon, type RawSocket } from './daemon-harness.js';
import { sleep, spawnTracked, tempDir, waitFor, freePort } from './processes.js';

/** What only the PostgreSQL backend promises: several endpoint processes on one database, tokens in it, outages of it. */
const backend = postgresBackend();
const ADMIN = 'token-admin-0123456789';
const machineToken = (machineId: string) => `token-${machineId}-0123456789`;

function tokensFileFor(machines: string[]): string {
  return writeTokensFile([...machines.map((machine_id) => ({ token: machineToken(machine_id), machine_id })), { token: ADMIN, admin: true }]);
}

/** Runs `taskhistory-cloud <args>` to its end. */
async function cloudCommand(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawnTracked(process.execPath, [CLOUD_BIN, ...args]);
  const { code } = await child.exited;
  return { code, stdout: child.stdout(), stderr: child.stderr() };
}

function databaseUrl(site: StorageSite): string {
  return site.args[site.args.indexOf('--database-url') + 1];
}

async function sql<R extends pg.QueryResultRow>(site: StorageSite, text: string, values: unknown[] = []): Promise<R[]> {
  const client = new pg.Client({ connectionString: databaseUrl(site) });
  await client.connect();
  try {
    return (await client.query<R>(text, values)).rows;
  } finally {
    await client.end();
  }
}

interface SyncedDaemon {
  daemon: Daemon;
  socket: RawSocket;
  machineId: string;
}

async function startSyncedDaemon(machineId: string, cloudUrl: string, extra: string[] = []): Promise<SyncedDaemon> {
  const tokenFile = join(tempDir('cloud-token-'), 'token');
  writeFileSync(tokenFile, `${machineToken(machineId)}\n`);
  chmodSync(tokenFile, 0o600);
  const daemon = await startDaemon({ args: ['--machine-id', machineId, '--cloud-url', cloudUrl, '--cloud-token-file', tokenFile, '--cloud-retry-max-ms', '300', ...extra] });
  return { daemon, socket: await openRawSocket(daemon.socketPath), machineId };
}

async function waitForSynced(socket: RawSocket, timeoutMs = 60_000): Promise<StatusResult> {
  return waitFor(async () => {
    const status = (await socket.call('status', {})) as StatusResult;
    return status.cloud.state === 'online' && status.cloud.queued === 0 && status.cloud.acked_seq === status.last_seq ? status : null;
  }, timeoutMs, 'the cloud to acknowledge every record');
}

/** Logs steps on a task until `stop()` is called; tolerant of a daemon that dies under it. */
function keepLogging(socket: RawSocket, label: string): { stop: () => Promise<void> } {
  let writing = true;
  const done = (async () => {
    const { task_id } = await socket.call('create_task', { description: label, mode: 'autonomous', steps: [] });
    for (let step = 1; writing; step++) {
      await socket.call('log_step', { task_id, step_num: step, command: `${label} step ${step}`, status: 'success', output: `out ${step}` });
    }
    await socket.call('complete_task', { task_id, final_status: 'completed' });
  })();
  return {
    stop: async () => {
      writing = false;
      await done;
    },
  };
}

/** The cloud's chain for the machine, checked to link from genesis, and the rows stored for it. */
async function storedChain(cloud: Cloud, site: StorageSite, machineId: string): Promise<{ records: ChainRecord[]; rows: number }> {
  const admin = await openCloudSocket(cloud.url, ADMIN);
  const records = await pullAll(admin, machineId);
  admin.close();
  const walker = new ChainWalker({ seq: 0, hash: GENESIS_HASH }, sha256Hex);
  for (const record of records) walker.accept(record);
  return { records, rows: await storedRecordCount(site, machineId) };
}

/** The test cluster's postmaster (its pid heads the socket's lock file) and then its children. */
function serverProcesses(): number[] {
  const postmaster = Number(readFileSync(join(backend.cluster().socketDir, '.s.PGSQL.5432.lock'), 'utf8').split('\n')[0]);
  const children = execFileSync('pgrep', ['-P', String(postmaster)], { encoding: 'utf8' }).trim().split('\n').map(Number);
  return [postmaster, ...children];
}

describe('fleet tier on PostgreSQL', () => {
  it('two endpoints on one database, one SIGKILLed and restarted mid-run: every seq stored once, linked to each daemon\'s head', async () => {
    const site = await backend.newSite();
    const machines = ['fleet-a', 'fleet-b', 'fleet-c', 'fleet-d'];
    const tokensFile = tokensFileFor(machines);
    const ports = [await freePort(), await freePort()];
    const endpoints = await Promise.all(ports.map((port) => startCloud(site, { tokensFile, port })));
    const daemons = await Promise.all(machines.map((machine, index) => startSyncedDaemon(machine, endpoints[index % 2].url)));
    const writers = daemons.map(({ socket, machineId }) => keepLogging(socket, machineId));
    await sleep(700);
    process.kill(endpoints[0].pid, 'SIGKILL');
    await endpoints[0].exited;
    await sleep(300);
    endpoints[0] = await startCloud(site, { tokensFile, port: ports[0] });
    await sleep(500);
    await Promise.all(writers.map((writer) => writer.stop()));

    for (const { socket, machineId } of daemons) {
      const status = await waitForSynced(socket);
      // Read through the other endpoint than the one the daemon pushed to: the database is the one truth.
      const { records, rows } = await storedChain(endpoints[1], site, machineId);
      expect(status.last_seq).toBeGreaterThan(3);
      expect(records.map((r) => r.seq)).toEqual(Array.from({ length: status.last_seq }, (_, i) => i + 1));
      expect(records.at(-1)?.hash).toBe(status.head_hash);
      expect(rows).toBe(status.last_seq);
    }
    const machinesAnswer = await (await httpGet(endpoints[0], '/v1/machines', ADMIN)).json();
    expect(machinesAnswer.machines.map((m: { machine_id: string }) => m.machine_id)).toEqual(machines);
  });

  it('stores a batch pushed to both endpoints at the same moment once, and both acknowledge it', async () => {
    const site = await backend.newSite();
    const tokensFile = tokensFileFor(['m1']);
    const [a, b] = await Promise.all([startCloud(site, { tokensFile }), startCloud(site, { tokensFile })]);
    const [toA, toB] = await Promise.all([openCloudSocket(a.url, machineToken('m1')), openCloudSocket(b.url, machineToken('m1'))]);
    const chain = makeChain(1000);
    for (let from = 0; from < chain.length; from += 50) {
      const batch = chain.slice(from, from + 50);
      const answers = await Promise.all([toA, toB].map((socket) => socket.call('push', { machine_id: 'm1', records: batch })));
      const expected = { acked_seq: from + 50, head_hash: chain[from + 49].hash };
      expect(answers).toEqual([expected, expected]);
    }
    const { records, rows } = await storedChain(a, site, 'm1');
    expect(JSON.stringify(records)).toBe(JSON.stringify(chain));
    expect(rows).toBe(1000);
    const [machine] = (await (await httpGet(b, '/v1/machines', ADMIN)).json()).machines;
    expect(machine).toMatchObject({ machine_id: 'm1', acked_seq: 1000, tasks: 200, running: 0, incidents: 0 });
  });

  it('stores the pushes of many machines arriving together (stored in groups) once each, with their task counts and steps', async () => {
    const site = await backend.newSite();
    const machines = Array.from({ length: 40 }, (_, i) => `g${String(i).padStart(2, '0')}`);
    const tokensFile = tokensFileFor(machines);
    const endpoints = await Promise.all([startCloud(site, { tokensFile }), startCloud(site, { tokensFile })]);
    // 23 records: 4 whole tasks and a running one; batches of 3 split tasks across pushes (steps appended, completions later).
    const chains = machines.map((machineId, i) => makeChain(23, { tag: machineId, machineId, startTs: 1_700_000_000 + i }));
    await Promise.all(
      machines.map(async (machineId, i) => {
        const socket = await openCloudSocket(endpoints[i % 2].url, machineToken(machineId));
        for (let from = 0; from < 23; from += 3) {
          const batch = chains[i].slice(from, from + 3);
          expect(await socket.call('push', { machine_id: machineId, records: batch })).toEqual({ acked_seq: from + batch.length, head_hash: batch.at(-1)!.hash });
        }
        socket.close();
      }),
    );
    for (const [i, machineId] of machines.entries()) {
      const { records, rows } = await storedChain(endpoints[0], site, machineId);
      expect(JSON.stringify(records)).toBe(JSON.stringify(chains[i]));
      expect(rows).toBe(23);
    }
    const listed = (await (await httpGet(endpoints[1], '/v1/machines', ADMIN)).json()).machines;
    expect(listed).toHaveLength(40);
    for (const machine of listed) expect(machine).toMatchObject({ acked_seq: 23, tasks: 5, running: 1, incidents: 0 });
    const task = await (await httpGet(endpoints[0], '/v1/machines/g07/tasks/task-g07-1', ADMIN)).json();
    expect(task).toMatchObject({ status: 'failed', steps: [{ command: 'cmd 6' }, { command: 'cmd 7' }, { command: 'cmd 8' }] });
  });

  it('creates, lists and revokes database tokens; a revoked token is locked out of both endpoints within 5 s, open connections included', async () => {
    const site = await backend.newSite();
    const url = databaseUrl(site);
    const created = await cloudCommand(['token', 'create', '--database-url', url, '--machine', 'm1', '--name', 'laptop']);
    expect(created.code).toBe(0);
    const token = created.stdout.trim();
    // At least 128 random bits; only the SHA-256 is kept.
    expect(token).toMatch(/^thc_[A-Za-z0-9_-]{43}$/);
    const stored = await sql<{ digest: string }>(site, 'SELECT * FROM tokens');
    expect(stored.map((row) => row.digest)).toEqual([createHash('sha256').update(token).digest('hex')]);
    expect(JSON.stringify(stored)).not.toContain(token.slice(4));
    const viewer = (await cloudCommand(['token', 'create', '--database-url', url, '--viewer'])).stdout.trim();
    expect((await cloudCommand(['token', 'create', '--database-url', url])).code).toBe(2);

    const [a, b] = await Promise.all([startCloud(site), startCloud(site)]);
    const sockets = await Promise.all([a, b].map((cloud) => openCloudSocket(cloud.url, token)));
    const chain = makeChain(10);
    expect(await sockets[0].call('push', { machine_id: 'm1', records: chain.slice(0, 5) })).toMatchObject({ acked_seq: 5 });
    expect(await sockets[1].call('push', { machine_id: 'm1', records: chain.slice(5) })).toMatchObject({ acked_seq: 10 });
    expect((await httpGet(b, '/v1/tasks', viewer)).status).toBe(200);
    expect((await errorOf((await openCloudSocket(a.url, viewer)).call('push', { machine_id: 'm1', records: chain }))).code).toBe(ErrorCodes.Forbidden);

    const listed = JSON.parse((await cloudCommand(['token', 'list', '--database-url', url, '--json'])).stdout) as { id: string; scope: string; last_used_at: string | null }[];
    expect(listed.map((t) => Object.keys(t).sort())).toEqual(Array(2).fill(['created_at', 'id', 'last_used_at', 'machine_id', 'name', 'revoked_at', 'scope']));
    expect(listed[0]).toMatchObject({ name: 'laptop', scope: 'machine', machine_id: 'm1', revoked_at: null });
    expect(listed[0].last_used_at).not.toBeNull();

    expect((await cloudCommand(['token', 'revoke', '--database-url', url, listed[0].id])).code).toBe(0);
    await waitFor(() => sockets.every((socket) => socket.closed !== null), 5000, 'both open connections to close');
    expect(sockets.map((socket) => socket.closed?.code)).toEqual([1008, 1008]);
    for (const cloud of [a, b]) {
      expect((await upgradeAnswer(cloud.url, { authorization: `Bearer ${token}` })).status).toBe(401);
      expect((await httpGet(cloud, '/v1/tasks', token)).status).toBe(401);
    }
    const after = JSON.parse((await cloudCommand(['token', 'list', '--database-url', url, '--json'])).stdout) as { revoked_at: string | null }[];
    expect(after[0].revoked_at).not.toBeNull();
    expect((await cloudCommand(['token', 'revoke', '--database-url', url, listed[0].id])).code).toBe(2);
  });

  it('with the database stopped: 1004 with retry_after_ms within 2 s, /readyz 503, upgrades 503; once it is back the daemon catches up exactly once', async () => {
    const site = await backend.newSite();
    const tokensFile = tokensFileFor(['m1', 'outage']);
    const dbToken = (await cloudCommand(['token', 'create', '--database-url', databaseUrl(site), '--admin'])).stdout.trim();
    const cloud = await startCloud(site, { tokensFile });
    const synced = await startSyncedDaemon('outage', cloud.url);
    const before = keepLogging(synced.socket, 'before');
    await sleep(300);
    await before.stop();
    const raw = await openCloudSocket(cloud.url, machineToken('m1'));
    // The daemon's status is read on a socket of its own: RawSocket matches answers to one request at a time.
    const observer = await openRawSocket(synced.daemon.socketPath);

    backend.cluster().stop();
    try {
      const during = keepLogging(synced.socket, 'during');
      // Promptly, without timing it here: the endpoint bounds every database wait at 1 s (postgres-storage.ts)
      // and a stopped server refuses at once, so an answer within the harness's 5 s at all is the proof.
      const failure = await errorOf(raw.call('push', { machine_id: 'm1', records: makeChain(3) }));
      expect(failure.code).toBe(ErrorCodes.StorageFailure);
      expect(failure.data.retry_after_ms).toBeGreaterThan(0);
      expect(failure.message).toContain('PostgreSQL');
      const ready = await httpGet(cloud, '/readyz');
      expect(ready.status).toBe(503);
      expect((await ready.json()).reason).toContain('PostgreSQL');
      expect((await httpGet(cloud, '/healthz')).status).toBe(200);
      const upgrade = await upgradeAnswer(cloud.url, { authorization: `Bearer ${dbToken}` });
      expect(upgrade.status).toBe(503);
      expect(Number(upgrade.retryAfter)).toBeGreaterThan(0);
      expect((await httpGet(cloud, '/v1/machines', dbToken)).status).toBe(503);
      await waitFor(async () => ((await observer.call('status', {})) as StatusResult).cloud.state === 'offline', 15_000, 'the daemon to see the cloud offline');
      await during.stop();
    } finally {
      backend.cluster().start();
    }

    const status = await waitForSynced(observer);
    const { records, rows } = await storedChain(cloud, site, 'outage');
    expect(records.map((r) => r.seq)).toEqual(Array.from({ length: status.last_seq }, (_, i) => i + 1));
    expect(records.at(-1)?.hash).toBe(status.head_hash);
    expect(rows).toBe(status.last_seq);
    expect((await httpGet(cloud, '/readyz')).status).toBe(200);
    expect(cloud.proc.exitCode).toBeNull();
  });

  it('with the database hung (every server process stopped): 1004 with retry_after_ms, /readyz 503; answers again once it resumes', async () => {
    const site = await backend.newSite();
    const cloud = await startCloud(site, { tokensFile: tokensFileFor(['m1']) });
    const raw = await openCloudSocket(cloud.url, machineToken('m1'));
    const chain = makeChain(6);
    // A pooled connection now exists: its statements go to a server process that will not answer.
    expect(await raw.call('push', { machine_id: 'm1', records: chain.slice(0, 3) })).toMatchObject({ acked_seq: 3 });
    const processes = serverProcesses();
    for (const pid of processes) process.kill(pid, 'SIGSTOP');
    try {
      // An unbounded wait (a connect, a statement, a pooled connection) gets no answer within the harness's 5 s;
      // the endpoint's bounds of 1 s each (postgres-storage.ts) answer 1004 instead.
      const failure = await errorOf(raw.call('push', { machine_id: 'm1', records: chain.slice(3) }));
      expect(failure.code).toBe(ErrorCodes.StorageFailure);
      expect(failure.data.retry_after_ms).toBeGreaterThan(0);
      expect(failure.message).toContain('PostgreSQL');
      expect((await httpGet(cloud, '/readyz')).status).toBe(503);
    } finally {
      for (const pid of processes.reverse()) process.kill(pid, 'SIGCONT');
    }
    expect(await raw.call('push', { machine_id: 'm1', records: chain.slice(3) })).toMatchObject({ acked_seq: 6 });
    expect(await storedRecordCount(site, 'm1')).toBe(6);
  });

  it('migrates an empty database, and migrating again changes nothing', async () => {
    const site = await backend.newSite();
    const url = databaseUrl(site);
    expect(await cloudCommand(['migrate', '--database-url', url])).toMatchObject({ code: 0, stdout: 'applied migrations 1\n' });
    const tables = await sql<{ tablename: string }>(site, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename");
    expect(tables.map((t) => t.tablename)).toEqual(['incidents', 'machines', 'records', 'schema_migrations', 'tasks', 'tokens']);
    expect(await cloudCommand(['migrate', '--database-url', url])).toMatchObject({ code: 0, stdout: 'the schema is up to date; nothing to do\n' });
    // An endpoint starting on the migrated database migrates nothing either.
    const cloud = await startCloud(site, { tokensFile: tokensFileFor([]) });
    expect(cloud.stderr()).not.toContain('migrated');
    expect(await sql(site, 'SELECT version FROM schema_migrations')).toEqual([{ version: 1 }]);
  });

  it('refuses to start without exactly one of --data-dir and --database-url, naming both', async () => {
    const site = await backend.newSite();
    for (const args of [[], ['--data-dir', tempDir(), ...site.args]]) {
      const run = await cloudCommand(['--port', '0', '--tokens-file', tokensFileFor([]), ...args]);
      expect(run.code).toBe(2);
      expect(run.stderr).toContain('exactly one of --data-dir DIR (files) and --database-url URL');
    }
    const unreachable = await cloudCommand(['--port', '0', '--database-url', 'postgresql://postgres@localhost/none?host=/nonexistent-dir']);
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr).toContain('/nonexistent-dir');
  });
});
