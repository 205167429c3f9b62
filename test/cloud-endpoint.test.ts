import { statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sha256Hex } from '../node/sha256.js';
import { ErrorCodes } from '../protocol/errors.js';
import { chainRecord, GENESIS_HASH, type ChainRecord, type UnchainedRecord } from '../protocol/records.js';
import { tasksFromRecords } from '../protocol/task-view.js';
import { cloudBackends, storedRecordCount } from './cloud-backends.js';
import {
  errorOf,
  httpGet,
  makeChain,
  openCloudSocket as openSocket,
  pullAll,
  startCloud as startCloudOn,
  upgradeAnswer,
  writeTokensFile,
  type Cloud,
  type StorageSite,
} from './cloud-harness.js';
import { CLOUD_BIN, type RawSocket } from './daemon-harness.js';
import { sleep, spawnTracked, tempDir, waitFor } from './processes.js';

const TOKENS = { m1: 'token-m1-0123456789', m2: 'token-m2-0123456789', admin: 'token-admin-0123456789' };

function tokensFile(mode = 0o600): string {
  return writeTokensFile(
    [
      { token: TOKENS.m1, machine_id: 'm1' },
      { token: TOKENS.m2, machine_id: 'm2' },
      { token: TOKENS.admin, admin: true },
    ],
    mode,
  );
}

const openCloudSocket = (cloud: Cloud, token: string): Promise<RawSocket> => openSocket(cloud.url, token);
const get = (cloud: Cloud, path: string, token?: string) => httpGet(cloud, path, token);
const upgradeStatus = async (cloud: Cloud, headers: Record<string, string>) => (await upgradeAnswer(cloud.url, headers)).status;

describe.each(cloudBackends())('taskhistory-cloud on the $name backend', (backend) => {
  /** Starts an endpoint on the site (a fresh one unless given). */
  const startCloud = async (site?: StorageSite) => startCloudOn(site ?? (await backend.newSite()), { tokensFile: tokensFile() });

  it('refuses to start when the tokens file is readable by group or others, naming the file and the fix', async () => {
    const readable = tokensFile(0o644);
    const child = spawnTracked(process.execPath, [CLOUD_BIN, '--port', '0', ...(await backend.newSite()).args, '--tokens-file', readable]);
    const { code } = await child.exited;
    expect(code).not.toBe(0);
    expect(child.stderr()).toContain(readable);
    expect(child.stderr()).toContain(`chmod 600 ${readable}`);
  });

  it('answers 401 to a WebSocket upgrade without a known token, and upgrades with one', async () => {
    const cloud = await startCloud();
    expect(await upgradeStatus(cloud, {})).toBe(401);
    expect(await upgradeStatus(cloud, { authorization: 'Bearer not-a-token' })).toBe(401);
    expect(await upgradeStatus(cloud, { authorization: `Bearer ${TOKENS.m1}` })).toBe(101);
  });

  it('pushes, reports the head, pulls ranges exactly as pushed and lists machines', async () => {
    const cloud = await startCloud();
    const m1 = await openCloudSocket(cloud, TOKENS.m1);
    expect(await m1.call('head', { machine_id: 'm1' })).toEqual({ acked_seq: 0, head_hash: null });

    const chain = makeChain(12);
    expect(await m1.call('push', { machine_id: 'm1', records: chain.slice(0, 7) })).toEqual({ acked_seq: 7, head_hash: chain[6].hash });
    expect(await m1.call('push', { machine_id: 'm1', records: chain.slice(7) })).toEqual({ acked_seq: 12, head_hash: chain[11].hash });
    expect(await m1.call('head', { machine_id: 'm1' })).toEqual({ acked_seq: 12, head_hash: chain[11].hash });

    const first = await m1.call('pull', { machine_id: 'm1', after_seq: 0, limit: 5 });
    expect(first.more).toBe(true);
    expect(first.records.map((r: ChainRecord) => r.seq)).toEqual([1, 2, 3, 4, 5]);
    const last = await m1.call('pull', { machine_id: 'm1', after_seq: 9 });
    expect(last).toEqual({ records: chain.slice(9), more: false });
    // Exactly as pushed: same keys in the same order.
    expect(JSON.stringify(await pullAll(m1, 'm1'))).toBe(JSON.stringify(chain));

    const admin = await openCloudSocket(cloud, TOKENS.admin);
    const m2 = await openCloudSocket(cloud, TOKENS.m2);
    await m2.call('push', { machine_id: 'm2', records: makeChain(3, { tag: 'b' }) });
    expect((await admin.call('machines', {})).machines).toEqual([
      { machine_id: 'm1', acked_seq: 12, head_hash: chain[11].hash },
      { machine_id: 'm2', acked_seq: 3, head_hash: makeChain(3, { tag: 'b' })[2].hash },
    ]);
    expect((await m1.call('machines', {})).machines.map((m: { machine_id: string }) => m.machine_id)).toEqual(['m1']);
  });

  it('refuses gap, fork and altered batches with the reason, storing nothing of them', async () => {
    const cloud = await startCloud();
    const m1 = await openCloudSocket(cloud, TOKENS.m1);
    const chain = makeChain(9);
    await m1.call('push', { machine_id: 'm1', records: chain.slice(0, 6) });
    const held = { acked_seq: 6, head_hash: chain[5].hash };

    const gap = await errorOf(m1.call('push', { machine_id: 'm1', records: chain.slice(7) }));
    expect(gap.code).toBe(ErrorCodes.ChainMismatch);
    expect(gap.data).toEqual({ reason: 'gap', seq: 7, ...held });

    const other = makeChain(9, { tag: 'other' });
    const forkAbove = await errorOf(m1.call('push', { machine_id: 'm1', records: [other[6]] }));
    expect(forkAbove.data).toEqual({ reason: 'fork', seq: 7, ...held });
    const forkBelow = await errorOf(m1.call('push', { machine_id: 'm1', records: other.slice(0, 8) }));
    expect(forkBelow.data).toEqual({ reason: 'fork', seq: 1, ...held });

    // chain[6] and chain[2] are steps: their output is covered by output_sha256.
    const tampered = { ...chain[6], output: 'not what was logged' } as ChainRecord;
    const altered = await errorOf(m1.call('push', { machine_id: 'm1', records: [tampered] }));
    expect(altered.code).toBe(ErrorCodes.ChainMismatch);
    expect(altered.data).toEqual({ reason: 'altered', seq: 7, ...held });
    const heldTampered = { ...chain[2], output: 'rewritten history' } as ChainRecord;
    const alteredBelow = await errorOf(m1.call('push', { machine_id: 'm1', records: [heldTampered, ...chain.slice(3)] }));
    expect(alteredBelow.data).toEqual({ reason: 'altered', seq: 3, ...held });

    expect(await m1.call('head', { machine_id: 'm1' })).toEqual(held);
    expect(await m1.call('push', { machine_id: 'm1', records: chain.slice(6) })).toEqual({ acked_seq: 9, head_hash: chain[8].hash });
  });

  it('acknowledges re-sent records without storing them twice, and takes pulled records back unchanged', async () => {
    const site = await backend.newSite();
    const cloud = await startCloud(site);
    const m1 = await openCloudSocket(cloud, TOKENS.m1);
    const chain = makeChain(10);
    await m1.call('push', { machine_id: 'm1', records: chain.slice(0, 6) });
    expect(await m1.call('push', { machine_id: 'm1', records: chain.slice(2, 10) })).toEqual({ acked_seq: 10, head_hash: chain[9].hash });
    expect(await m1.call('push', { machine_id: 'm1', records: chain })).toEqual({ acked_seq: 10, head_hash: chain[9].hash });
    const pulled = await pullAll(m1, 'm1');
    expect(pulled.map((r) => r.seq)).toEqual(chain.map((r) => r.seq));
    expect(await m1.call('push', { machine_id: 'm1', records: pulled })).toEqual({ acked_seq: 10, head_hash: chain[9].hash });

    expect(await storedRecordCount(site, 'm1')).toBe(10);

    // Pulled records start a fresh endpoint's chain just as well.
    const fresh = await startCloud();
    const freshM1 = await openCloudSocket(fresh, TOKENS.m1);
    expect(await freshM1.call('push', { machine_id: 'm1', records: pulled })).toEqual({ acked_seq: 10, head_hash: chain[9].hash });
  });

  it('lets an admin token read every machine but not push; a machine token is forbidden other machines', async () => {
    const cloud = await startCloud();
    const m1 = await openCloudSocket(cloud, TOKENS.m1);
    const admin = await openCloudSocket(cloud, TOKENS.admin);
    const chain = makeChain(5);
    await m1.call('push', { machine_id: 'm1', records: chain });

    expect(await admin.call('head', { machine_id: 'm1' })).toEqual({ acked_seq: 5, head_hash: chain[4].hash });
    expect((await admin.call('pull', { machine_id: 'm1', after_seq: 0 })).records).toEqual(chain);
    const adminPush = await errorOf(admin.call('push', { machine_id: 'm1', records: makeChain(6).slice(5) }));
    expect(adminPush.code).toBe(ErrorCodes.Forbidden);

    for (const [method, params] of [
      ['push', { machine_id: 'm2', records: makeChain(1, { tag: 'b' }) }],
      ['head', { machine_id: 'm2' }],
      ['pull', { machine_id: 'm2', after_seq: 0 }],
    ] as const) {
      expect((await errorOf(m1.call(method, params))).code).toBe(ErrorCodes.Forbidden);
    }
    expect(await admin.call('head', { machine_id: 'm2' })).toEqual({ acked_seq: 0, head_hash: null });
  });

  it('answers malformed messages by the JSON-RPC 2.0 spec and survives an oversize frame', async () => {
    const cloud = await startCloud();
    const socket = await openCloudSocket(cloud, TOKENS.m1);
    socket.send('{not json');
    expect((await socket.next()).error.code).toBe(ErrorCodes.ParseError);
    for (const text of ['null', '0', '[]', '{"jsonrpc":"2.0","id":1,"method":1}']) {
      socket.send(text);
      expect((await socket.next()).error.code).toBe(ErrorCodes.InvalidRequest);
    }
    socket.send('[{"jsonrpc":"2.0","id":"a","method":"head","params":{"machine_id":"m1"}}]');
    expect(await socket.next()).toEqual([{ jsonrpc: '2.0', id: 'a', result: { acked_seq: 0, head_hash: null } }]);
    socket.send('[null, {"jsonrpc":"2.0","method":"head","params":{"machine_id":"m1"}}]');
    expect(await socket.next()).toEqual([{ jsonrpc: '2.0', id: null, error: { code: ErrorCodes.InvalidRequest, message: 'Invalid Request' } }]);
    const invalid = await socket.request('pull', { machine_id: 'm1', after_seq: -1, extra: true });
    expect(invalid.error.code).toBe(ErrorCodes.InvalidParams);
    expect(invalid.error.data.issues.length).toBeGreaterThan(0);
    expect((await socket.request('no_such_method', {})).error.code).toBe(ErrorCodes.MethodNotFound);
    const notRecords = await socket.request('push', { machine_id: 'm1', records: [{ seq: 1 }] });
    expect(notRecords.error.code).toBe(ErrorCodes.InvalidParams);

    const big = await openCloudSocket(cloud, TOKENS.m1);
    big.send('x'.repeat(17 * 1024 * 1024));
    await waitFor(() => big.closed, 10_000, 'the oversize connection to close');
    expect(big.closed?.code).toBe(1009);
    expect(await socket.call('head', { machine_id: 'm1' })).toEqual({ acked_seq: 0, head_hash: null });
  });

  it('serves the to_dict view over HTTP with 401, 403, 404 and ?max_tasks', async () => {
    const cloud = await startCloud();
    const m1 = await openCloudSocket(cloud, TOKENS.m1);
    // 7 tasks of 5 records, then one running task of 3 records.
    const chain = makeChain(38);
    await m1.call('push', { machine_id: 'm1', records: chain });
    const path = '/v1/machines/m1/task_history.json';

    const response = await get(cloud, path, TOKENS.admin);
    expect(response.status).toBe(200);
    const expectedTasks = [...tasksFromRecords(chain).values()];
    expect(await response.json()).toEqual({ tasks: expectedTasks, count: 8, max_tasks: 100 });
    expect(await (await get(cloud, path, TOKENS.m1)).json()).toEqual({ tasks: expectedTasks, count: 8, max_tasks: 100 });

    const trimmed = await (await get(cloud, `${path}?max_tasks=3`, TOKENS.m1)).json();
    expect(trimmed.max_tasks).toBe(3);
    expect(trimmed.tasks.map((t: { task_id: string }) => t.task_id)).toEqual(['task-a-5', 'task-a-6', 'task-a-7']);
    expect(trimmed.count).toBe(3);

    expect((await get(cloud, path)).status).toBe(401);
    expect((await get(cloud, path, 'wrong')).status).toBe(401);
    expect((await get(cloud, path, TOKENS.m2)).status).toBe(403);
    expect((await get(cloud, '/v1/machines/never-seen/task_history.json', TOKENS.admin)).status).toBe(404);
    expect((await get(cloud, `${path}?max_tasks=0`, TOKENS.admin)).status).toBe(400);
  });

  it('keeps running tasks when trimming the HTTP view', async () => {
    const cloud = await startCloud();
    const m1 = await openCloudSocket(cloud, TOKENS.m1);
    // task 0 never completes: a step replaces its completion record.
    const records: ChainRecord[] = [];
    let prev = { seq: 0, hash: GENESIS_HASH };
    const add = (body: UnchainedRecord) => {
      const record = chainRecord(body, prev.seq, prev.hash, sha256Hex);
      records.push(record);
      prev = { seq: record.seq, hash: record.hash };
    };
    for (let t = 0; t < 4; t++) {
      add({ type: 'task_created', task_id: `t${t}`, description: `task ${t}`, mode: 'step-by-step', plan: [], machine_id: 'm1', ts: 1_700_000_000 + t });
      if (t > 0) add({ type: 'task_completed', task_id: `t${t}`, final_status: 'completed', ts: 1_700_000_100 + t });
    }
    await m1.call('push', { machine_id: 'm1', records });
    const view = await (await get(cloud, '/v1/machines/m1/task_history.json?max_tasks=2', TOKENS.m1)).json();
    expect(view.tasks.map((t: { task_id: string }) => t.task_id)).toEqual(['t0', 't3']);
  });

  it('loses nothing it acknowledged when killed with SIGKILL mid-push', async () => {
    const site = await backend.newSite();
    const chain = makeChain(3000);
    let acked = 0;
    for (let round = 0; round < 5; round++) {
      const cloud = await startCloud(site);
      const m1 = await openCloudSocket(cloud, TOKENS.m1);
      const head = await m1.call('head', { machine_id: 'm1' });
      expect(head.acked_seq).toBeGreaterThanOrEqual(acked);
      if (head.acked_seq > 0) expect(head.head_hash).toBe(chain[head.acked_seq - 1].hash);
      // Push small batches back to back and kill the endpoint while they are in flight.
      let next = head.acked_seq;
      const pushing = (async () => {
        while (next < chain.length) {
          const batch = chain.slice(next, next + 25);
          next += batch.length;
          const result = await m1.call('push', { machine_id: 'm1', records: batch });
          acked = Math.max(acked, result.acked_seq);
        }
      })().catch(() => undefined);
      // Kill once this round has had an acknowledgement (however slow the machine), at a random point after it.
      const ackedBefore = acked;
      await waitFor(() => acked > ackedBefore || next >= chain.length, 30_000, 'a push of this round to be acknowledged');
      await sleep(Math.random() * 150);
      process.kill(cloud.pid, 'SIGKILL');
      await cloud.exited;
      // An answer in flight at the kill never comes: stop waiting for it.
      m1.close();
      void pushing;
    }
    const cloud = await startCloud(site);
    const m1 = await openCloudSocket(cloud, TOKENS.m1);
    const stored = await pullAll(m1, 'm1');
    expect(stored.length).toBeGreaterThanOrEqual(acked);
    expect(acked).toBeGreaterThan(0);
    expect(stored).toEqual(chain.slice(0, stored.length));
  }, 180_000); // five endpoint kills and restarts: minutes on a loaded machine

  it('exits 0 on SIGTERM', async () => {
    const cloud = await startCloud();
    process.kill(cloud.pid, 'SIGTERM');
    expect((await cloud.exited).code).toBe(0);
  });
});

describe('taskhistory-cloud on the file backend, under umask 000', () => {
  it('creates its directories 0700 and its files 0600', async () => {
    const dataDir = join(tempDir('cloud-umask-'), 'nested', 'data');
    const command = `umask 000; exec "${process.execPath}" "${CLOUD_BIN}" --port 0 --data-dir "${dataDir}" --tokens-file "${tokensFile()}"`;
    const child = spawnTracked('sh', ['-c', command]);
    await waitFor(() => /<6>listening/.test(child.stderr()), 20_000, 'the cloud to listen');
    const socket = await openSocket(/url=(\S+)/.exec(child.stderr())![1], TOKENS.m1);
    await socket.call('push', { machine_id: 'm1', records: makeChain(3) });
    for (const dir of [join(dataDir, '..'), dataDir, join(dataDir, 'machines')]) expect(statSync(dir).mode & 0o777).toBe(0o700);
    for (const file of [join(dataDir, 'incidents.jsonl'), join(dataDir, 'machines', 'm1.jsonl')]) expect(statSync(file).mode & 0o777).toBe(0o600);
  });
});
