import { chmodSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sha256Hex } from '../node/sha256.js';
import { ChainWalker } from '../protocol/chain-verify.js';
import type { CloudStatus, StatusResult } from '../protocol/methods.js';
import { GENESIS_HASH, type ChainRecord } from '../protocol/records.js';
import { cloudBackends } from './cloud-backends.js';
import { openCloudSocket, startCloud as startCloudOn, writeTokensFile, type Cloud, type CloudBackend, type StorageSite } from './cloud-harness.js';
import { openRawSocket, RawSocket, REPO, startDaemon, type Daemon } from './daemon-harness.js';
import { sleep, spawnTracked, tempDir, waitFor, freePort } from './processes.js';

/** The harness starts every daemon as machine `test-machine`. */
const MACHINE = 'test-machine';
const TOKENS = { machine: 'token-test-machine-0123456789', other: 'token-other-machine-0123456789', admin: 'token-admin-0123456789' };

function secretFile(dir: string, name: string, content: string, mode = 0o600): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  chmodSync(path, mode);
  return path;
}

/** A cloud endpoint's place: its storage, tokens file and port, kept across restarts. */
interface CloudSite {
  storage: StorageSite;
  tokensFile: string;
  port: number;
  url: string;
}

async function siteOn(backend: CloudBackend): Promise<CloudSite> {
  const tokensFile = writeTokensFile([
    { token: TOKENS.machine, machine_id: MACHINE },
    { token: TOKENS.other, machine_id: 'other-machine' },
    { token: TOKENS.admin, admin: true },
  ]);
  const port = await freePort();
  return { storage: await backend.newSite(), tokensFile, port, url: `ws://127.0.0.1:${port}/v1/sync` };
}

const startCloud = (site: CloudSite): Promise<Cloud> => startCloudOn(site.storage, { tokensFile: site.tokensFile, port: site.port });

/** A fake cloud endpoint process (test/fixtures/fake-endpoint.mjs) that answers pushes as `answer` says. */
async function startFakeCloud(answer: 'above' | 'wrong-hash' | 'storage-failure', extra: string[] = []): Promise<Cloud & { pushes(): string[] }> {
  const child = spawnTracked(process.execPath, [join(REPO, 'test/fixtures/fake-endpoint.mjs'), '--answer', answer, ...extra]);
  const url = await waitFor(() => {
    if (child.proc.exitCode !== null) throw new Error(`the fake cloud exited during start-up:\n${child.stderr()}`);
    return /listening url=(\S+)/.exec(child.stderr())?.[1];
  }, 15_000, 'the fake cloud to listen');
  const pushes = () => child.stdout().split('\n').filter((line) => line.startsWith('push '));
  return { ...child, url, httpBase: url.replace(/^ws/, 'http').replace(/\/v1\/sync$/, ''), pushes };
}

/** Every record the cloud holds for the test machine, checked to form one chain from genesis. */
async function cloudChain(url: string): Promise<ChainRecord[]> {
  const admin = await openCloudSocket(url, TOKENS.admin);
  const records: ChainRecord[] = [];
  for (;;) {
    const page = await admin.call('pull', { machine_id: MACHINE, after_seq: records.length, limit: 5000 });
    records.push(...page.records);
    if (!page.more) break;
  }
  admin.close();
  const walker = new ChainWalker({ seq: 0, hash: GENESIS_HASH }, sha256Hex);
  for (const record of records) walker.accept(record);
  return records;
}

async function cloudHead(url: string): Promise<{ acked_seq: number; head_hash: string | null }> {
  const admin = await openCloudSocket(url, TOKENS.admin);
  const head = await admin.call('head', { machine_id: MACHINE });
  admin.close();
  return head;
}

function cloudArgs(url: string, tokenFile: string, extra: string[] = []): string[] {
  return ['--cloud-url', url, '--cloud-token-file', tokenFile, '--cloud-retry-max-ms', '300', ...extra];
}

function tokenFile(token = TOKENS.machine): string {
  return secretFile(tempDir('cloud-token-'), 'token', `${token}\n`);
}

async function cloudStatus(socket: RawSocket): Promise<CloudStatus> {
  return ((await socket.call('status', {})) as StatusResult).cloud;
}

/** Waits until the daemon reports that the cloud has everything it committed. */
async function waitForSynced(socket: RawSocket, timeoutMs = 30_000): Promise<StatusResult> {
  return waitFor(async () => {
    const status = (await socket.call('status', {})) as StatusResult;
    return status.cloud.state === 'online' && status.cloud.queued === 0 && status.cloud.acked_seq === status.last_seq ? status : null;
  }, timeoutMs, 'the cloud to acknowledge every record');
}

async function logTask(socket: RawSocket, steps: number, label: string): Promise<string> {
  const { task_id } = await socket.call('create_task', { description: `${label}`, mode: 'autonomous', steps: ['run'] });
  for (let step = 1; step <= steps; step++) {
    await socket.call('log_step', { task_id, step_num: step, command: `echo ${label} ${step}`, status: 'success', output: `${label} output ${step}` });
  }
  return task_id;
}

async function startSyncedDaemon(url: string, options: { dataDir?: string; token?: string; extra?: string[] } = {}): Promise<{ daemon: Daemon; socket: RawSocket }> {
  const daemon = await startDaemon({ dataDir: options.dataDir, args: cloudArgs(url, tokenFile(options.token), options.extra) });
  return { daemon, socket: await openRawSocket(daemon.socketPath) };
}

describe.each(cloudBackends())('cloud sync on the $name backend', (backend) => {
  const cloudSite = () => siteOn(backend);
  it('queues 1,000 steps while the cloud is down and delivers each exactly once when it comes up', async () => {
    const site = await cloudSite();
    const { socket } = await startSyncedDaemon(site.url, { extra: ['--restore-timeout-ms', '300'] });
    const taskId = await logTask(socket, 1000, 'offline');
    await socket.call('complete_task', { task_id: taskId, final_status: 'completed' });

    const offline = await waitFor(async () => {
      const cloud = await cloudStatus(socket);
      return cloud.state === 'offline' ? cloud : null;
    }, 10_000, 'the daemon to report the cloud offline');
    expect(offline.queued).toBe(1002);
    expect(offline.acked_seq).toBe(0);
    expect(offline.lag_ms).toBeGreaterThan(0);
    expect(offline.last_error).toMatch(/127\.0\.0\.1/);

    await startCloud(site);
    const status = await waitForSynced(socket);
    const records = await cloudChain(site.url);
    expect(records.map((r) => r.seq)).toEqual(Array.from({ length: 1002 }, (_, i) => i + 1));
    expect(records.filter((r) => r.type === 'step_logged')).toHaveLength(1000);
    expect(records.at(-1)?.hash).toBe(status.head_hash);
    expect(status.cloud.lag_ms).toBe(0);
  });

  it('ends with exactly the daemon\'s records after SIGKILLs of cloud and daemon at random points', async () => {
    const site = await cloudSite();
    let cloud = await startCloud(site);
    let { daemon, socket } = await startSyncedDaemon(site.url);
    const dataDir = daemon.dataDir;
    const kills = { cloud: 0, daemon: 0 };
    for (let round = 0; round < 12; round++) {
      let writing = true;
      const writer = (async () => {
        const { task_id } = await socket.call('create_task', { description: `round ${round}`, mode: 'autonomous', steps: [] });
        for (let step = 1; writing; step++) {
          await socket.call('log_step', { task_id, step_num: step, command: `step ${step}`, status: 'success', output: 'x'.repeat(step % 7 * 100) });
        }
      })().catch(() => undefined); // the daemon may die under it
      await sleep(50 + Math.random() * 250);
      if (round % 2 === 0) {
        process.kill(cloud.pid, 'SIGKILL');
        await cloud.exited;
        kills.cloud++;
        writing = false;
        await writer;
        cloud = await startCloud(site);
      } else {
        process.kill(daemon.pid, 'SIGKILL');
        await daemon.exited;
        kills.daemon++;
        writing = false;
        socket.close();
        ({ daemon, socket } = await startSyncedDaemon(site.url, { dataDir }));
      }
    }
    const status = await waitForSynced(socket);
    const records = await cloudChain(site.url);
    expect(kills).toEqual({ cloud: 6, daemon: 6 });
    expect(status.last_seq).toBeGreaterThan(12);
    expect(records.map((r) => r.seq)).toEqual(Array.from({ length: status.last_seq }, (_, i) => i + 1));
    expect(records.at(-1)?.hash).toBe(status.head_hash);
    expect((await socket.call('verify', {})).ok).toBe(true);

    // The same content on both sides: the cloud's to_dict view equals the daemon's.
    const daemonView = await socket.call('to_dict', {});
    const response = await fetch(`${cloud.httpBase}/v1/machines/${MACHINE}/task_history.json`, { headers: { authorization: `Bearer ${TOKENS.admin}` } });
    expect(await response.json()).toEqual(daemonView);
  }, 180_000); // twelve endpoint and daemon restarts: minutes on a loaded machine

  it('rejects a wrong token: auth_failed in status, nothing pushed', async () => {
    const site = await cloudSite();
    await startCloud(site);
    const refusals = [
      // An unknown token is refused at the upgrade; another machine's token at the first call.
      ['not-a-valid-token', `${site.url} refused the token (HTTP 401); check the cloud token file`],
      [TOKENS.other, 'Forbidden: this token belongs to machine other-machine, not test-machine'],
    ];
    for (const [token, refusal] of refusals) {
      const { socket } = await startSyncedDaemon(site.url, { token });
      await logTask(socket, 3, 'refused');
      const cloud = await waitFor(async () => {
        const status = await cloudStatus(socket);
        return status.state === 'auth_failed' ? status : null;
      }, 10_000, 'the daemon to report auth_failed');
      expect(cloud.last_error).toBe(refusal);
      expect(cloud.queued).toBe(4);
      expect(cloud.acked_seq).toBe(0);
      expect(await cloudHead(site.url)).toEqual({ acked_seq: 0, head_hash: null });
    }
  });

  it('refuses to start with a token file readable by others, naming the file', async () => {
    const file = secretFile(tempDir('cloud-token-'), 'token', `${TOKENS.machine}\n`, 0o644);
    const daemon = await startDaemon({ args: cloudArgs('ws://127.0.0.1:9/v1/sync', file), noWait: true });
    const { code } = await daemon.exited;
    expect(code).not.toBe(0);
    expect(daemon.stderr()).toContain(file);
    expect(daemon.stderr()).toContain(`chmod 600 ${file}`);
  });

  it('restores a fresh data dir from the cloud, reproducing to_dict exactly, then keeps pushing', async () => {
    const site = await cloudSite();
    await startCloud(site);
    const first = await startSyncedDaemon(site.url);
    for (let t = 0; t < 5; t++) {
      const taskId = await logTask(first.socket, 4, `task ${t}`);
      if (t !== 2) await first.socket.call('complete_task', { task_id: taskId, final_status: t === 3 ? 'failed' : 'completed' });
    }
    await waitForSynced(first.socket);
    const original = await first.socket.call('to_dict', {});
    first.socket.close();
    await first.daemon.stop();

    const restored = await startSyncedDaemon(site.url);
    expect(await restored.socket.call('to_dict', {})).toEqual(original);
    const status = await waitForSynced(restored.socket);
    expect(status.cloud.restore).toMatch(/restored 29 records/);
    expect((await restored.socket.call('verify', {})).ok).toBe(true);

    await logTask(restored.socket, 1, 'after restore');
    const synced = await waitForSynced(restored.socket);
    expect(synced.last_seq).toBe(31);
    expect((await cloudHead(site.url)).acked_seq).toBe(31);
  });

  it('trims like the daemon: the cloud view and a restore match to_dict when max_tasks dropped a task', async () => {
    const site = await cloudSite();
    const cloud = await startCloud(site);
    const first = await startSyncedDaemon(site.url, { extra: ['--max-tasks', '2'] });
    const call = (method: string, params: object) => first.socket.call(method, params);
    // A runs while B finishes and C starts: the trim drops B, the oldest finished task. Then A finishes.
    const a = (await call('create_task', { description: 'A', mode: 'autonomous', steps: [] })).task_id;
    const b = (await call('create_task', { description: 'B', mode: 'autonomous', steps: [] })).task_id;
    await call('complete_task', { task_id: b, final_status: 'completed' });
    await waitForSynced(first.socket);
    await call('create_task', { description: 'C', mode: 'autonomous', steps: [] });
    await waitForSynced(first.socket);
    await call('complete_task', { task_id: a, final_status: 'completed' });
    await waitForSynced(first.socket);
    const original = await call('to_dict', {});
    expect(original.tasks.map((t: { description: string }) => t.description)).toEqual(['A', 'C']);

    const response = await fetch(`${cloud.httpBase}/v1/machines/${MACHINE}/task_history.json?max_tasks=2`, { headers: { authorization: `Bearer ${TOKENS.admin}` } });
    expect(await response.json()).toEqual(original);

    first.socket.close();
    await first.daemon.stop();
    const restored = await startSyncedDaemon(site.url, { extra: ['--max-tasks', '2'] });
    expect(await restored.socket.call('to_dict', {})).toEqual(original);
  });

  it('holds records the cloud has not acknowledged past max_tasks, across a restart', async () => {
    const site = await cloudSite();
    const first = await startSyncedDaemon(site.url, { extra: ['--max-tasks', '2', '--restore-timeout-ms', '300'] });
    for (let t = 0; t < 5; t++) {
      const taskId = await logTask(first.socket, 1, `held ${t}`);
      await first.socket.call('complete_task', { task_id: taskId, final_status: 'completed' });
    }
    expect((await cloudStatus(first.socket)).queued).toBe(15);
    first.socket.close();
    await first.daemon.stop();

    const restarted = await startSyncedDaemon(site.url, { dataDir: first.daemon.dataDir, extra: ['--max-tasks', '2'] });
    await startCloud(site);
    const status = await waitForSynced(restarted.socket);
    expect(status.last_seq).toBe(15);
    expect((await cloudChain(site.url)).filter((r) => r.type === 'task_created')).toHaveLength(5);
    // Once acknowledged, the daemon trims down to max_tasks.
    await waitFor(async () => (await restarted.socket.call('to_dict', {})).count === 2, 10_000, 'the daemon to trim after the acknowledgement');
  });

  it('stops pushing and reports a fork when the cloud holds a different chain, changing neither side', async () => {
    const site = await cloudSite();
    // One daemon fills the cloud with its chain for the machine id...
    const cloud = await startCloud(site);
    const other = await startSyncedDaemon(site.url);
    await logTask(other.socket, 3, 'other chain');
    await waitForSynced(other.socket);
    other.socket.close();
    await other.daemon.stop();
    process.kill(cloud.pid, 'SIGTERM');
    await cloud.exited;
    await startCloud(site);
    const cloudRecords = await cloudChain(site.url);
    expect(cloudRecords).toHaveLength(4);

    // ...while another, started when the cloud was unreachable, began a fresh chain under the same id.
    const down = await cloudSite();
    const local = await startSyncedDaemon(down.url, { extra: ['--restore-timeout-ms', '300'] });
    expect((await cloudStatus(local.socket)).restore).toMatch(/not restored/);
    await logTask(local.socket, 5, 'local chain');
    local.socket.close();
    await local.daemon.stop();
    const restarted = await startSyncedDaemon(site.url, { dataDir: local.daemon.dataDir });
    const localView = await restarted.socket.call('to_dict', {});

    const fork = await waitFor(async () => {
      const status = await cloudStatus(restarted.socket);
      return status.state === 'fork' ? status : null;
    }, 15_000, 'the daemon to report a fork');
    expect(fork.last_error).toMatch(/seq 4/);
    expect(fork.acked_seq).toBe(0);
    expect(restarted.daemon.stderr()).toMatch(/<3>FORK/);

    await logTask(restarted.socket, 1, 'after the fork');
    await sleep(500);
    expect((await cloudStatus(restarted.socket)).state).toBe('fork');
    expect(await cloudChain(site.url)).toEqual(cloudRecords);
    const localAfter = await restarted.socket.call('to_dict', {});
    expect(localAfter.tasks[0]).toEqual(localView.tasks[0]);
    expect((await restarted.socket.call('verify', {})).ok).toBe(true);
  });

  it('measures commit-to-cloud-acknowledgement lag', async () => {
    const site = await cloudSite();
    await startCloud(site);
    const { socket } = await startSyncedDaemon(site.url);
    await waitFor(async () => (await cloudStatus(socket)).state === 'online', 10_000, 'the cloud link to come online');
    const { task_id } = await socket.call('create_task', { description: 'lag', mode: 'autonomous', steps: [] });
    const lags: number[] = [];
    for (let step = 1; step <= 100; step++) {
      const { seq } = await socket.call('log_step', { task_id, step_num: step, command: 'true', status: 'success' });
      const committed = performance.now();
      while ((await cloudStatus(socket)).acked_seq < seq);
      lags.push(performance.now() - committed);
    }
    lags.sort((a, b) => a - b);
    const at = (q: number) => lags[Math.min(lags.length - 1, Math.floor(q * lags.length))].toFixed(2);
    console.log(`commit-to-cloud-ack lag over ${lags.length} steps: p50 ${at(0.5)} ms, p90 ${at(0.9)} ms, p99 ${at(0.99)} ms, max ${at(1)} ms (polled via status)`);
    expect(lags).toHaveLength(100);
  });
});

describe('a cloud whose word does not hold', () => {
  /** Logs five finished one-step tasks under --max-tasks 2 and waits until the daemon has refused the cloud's answer to a push of all 15 records. */
  async function refusedAfterFiveTasks(answer: 'above' | 'wrong-hash'): Promise<{ daemon: Daemon; socket: RawSocket; cloud: CloudStatus }> {
    const fake = await startFakeCloud(answer);
    const { daemon, socket } = await startSyncedDaemon(fake.url, { extra: ['--max-tasks', '2', '--restore-timeout-ms', '300'] });
    for (let t = 0; t < 5; t++) {
      const taskId = await logTask(socket, 1, `unstored ${t}`);
      await socket.call('complete_task', { task_id: taskId, final_status: 'completed' });
    }
    await waitFor(() => fake.pushes().some((line) => line.endsWith('-15')), 15_000, 'a push of every record');
    const cloud = await waitFor(async () => {
      const status = await cloudStatus(socket);
      return status.state === 'refused_ack' && /seq 15\b/.test(status.last_error ?? '') ? status : null;
    }, 15_000, 'the daemon to refuse the acknowledgement of seq 15');
    return { daemon, socket, cloud };
  }

  async function expectNothingBelieved(daemon: Daemon, socket: RawSocket, cloud: CloudStatus): Promise<void> {
    expect(cloud.acked_seq).toBe(0);
    expect(cloud.queued).toBe(15);
    expect(daemon.stderr()).toMatch(/<3>refused the cloud's acknowledgement/);
    // No cursor was written, and trimming kept every task, since no cloud stored any.
    expect(existsSync(join(daemon.dataDir, 'cloud_cursor.json'))).toBe(false);
    const view = await socket.call('to_dict', {});
    expect(view.tasks.map((t: { description: string }) => t.description)).toEqual([0, 1, 2, 3, 4].map((t) => `unstored ${t}`));
    expect((await socket.call('status', {})).last_seq).toBe(15);
  }

  it('refuses an acknowledgement above what was pushed: no cursor moves, nothing is trimmed', async () => {
    const { daemon, socket, cloud } = await refusedAfterFiveTasks('above');
    expect(cloud.last_error).toBe('the cloud acknowledged seq 1000000, but it was sent records up to seq 15 only');
    await expectNothingBelieved(daemon, socket, cloud);
  });

  it('refuses an acknowledgement whose head hash is not the hash of that record', async () => {
    const { daemon, socket, cloud } = await refusedAfterFiveTasks('wrong-hash');
    const records = await socket.call('get_recent', { count: 5 });
    const fifteenth = records.at(-1);
    expect(fifteenth.completed_seq).toBe(15);
    expect(cloud.last_error).toMatch(/^the cloud acknowledged seq 15 with head hash [0-9a-f]{64}, but that record's hash is [0-9a-f]{64}$/);
    const [, claimed, actual] = /head hash ([0-9a-f]{64}), but that record's hash is ([0-9a-f]{64})/.exec(cloud.last_error as string) ?? [];
    expect(claimed).not.toBe(actual);
    await expectNothingBelieved(daemon, socket, cloud);
  });

  it('comes back online at the first acknowledgement that holds, and only then trims', async () => {
    const fake = await startFakeCloud('above', ['--honest-after', '1']);
    const { daemon, socket } = await startSyncedDaemon(fake.url, { extra: ['--max-tasks', '2', '--restore-timeout-ms', '300'] });
    const first = await logTask(socket, 1, 'first');
    await socket.call('complete_task', { task_id: first, final_status: 'completed' });
    // The log, not status: the honest retry may come before any status call could see refused_ack.
    await waitFor(() => daemon.stderr().includes("<3>refused the cloud's acknowledgement"), 15_000, 'the first acknowledgement to be refused');
    for (let t = 0; t < 3; t++) {
      const taskId = await logTask(socket, 1, `later ${t}`);
      await socket.call('complete_task', { task_id: taskId, final_status: 'completed' });
    }
    const status = await waitForSynced(socket);
    expect(status.cloud).toMatchObject({ state: 'online', acked_seq: 12, queued: 0, last_error: null });
    await waitFor(async () => (await socket.call('to_dict', {})).count === 2, 10_000, 'the daemon to trim what the cloud now holds');
  });

  it('waits as long as a storage failure (1004) asks in data.retry_after_ms, and it is no auth failure', async () => {
    const fake = await startFakeCloud('storage-failure', ['--retry-after-ms', '60000']);
    const { socket } = await startSyncedDaemon(fake.url, { extra: ['--restore-timeout-ms', '300'] });
    await logTask(socket, 1, 'while the database is down');
    const cloud = await waitFor(async () => {
      const status = await cloudStatus(socket);
      return status.next_retry_at !== null && status.last_error !== null ? status : null;
    }, 15_000, 'the daemon to schedule a retry after the storage failure');
    expect(cloud.state).toBe('offline');
    expect(cloud.last_error).toBe("the cloud's storage failed (code 1004): Storage failure: the database is down; it asks to retry in 60000 ms");
    expect(cloud.queued).toBe(2);
    // --cloud-retry-max-ms is 300: only the cloud's word explains a retry this far ahead.
    expect(Date.parse(cloud.next_retry_at as string) - Date.now()).toBeGreaterThan(30_000);
    expect(fake.pushes()).toHaveLength(1);
  });
});
