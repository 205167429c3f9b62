import { connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../protocol/errors.js';
import type { ChainLink, FleetTaskSummary, TasksPage } from '../protocol/fleet-api.js';
import type { ChainRecord } from '../protocol/records.js';
import { tasksFromRecords } from '../protocol/task-view.js';
import { cloudBackends } from './cloud-backends.js';
import { errorOf, httpGet, makeChain, openCloudSocket, startCloud, writeTokensFile, type Cloud } from './cloud-harness.js';
import { waitFor } from './processes.js';

const TOKENS = { m1: 'token-m1-0123456789', m2: 'token-m2-0123456789', admin: 'token-admin-0123456789' };
const tokensFile = () =>
  writeTokensFile([
    { token: TOKENS.m1, machine_id: 'm1' },
    { token: TOKENS.m2, machine_id: 'm2' },
    { token: TOKENS.admin, admin: true },
  ]);

async function json(cloud: Cloud, path: string, token = TOKENS.admin): Promise<{ status: number; body: any }> {
  const response = await httpGet(cloud, path, token);
  return { status: response.status, body: await response.json() };
}

/** Every page of /v1/tasks for the query, following next_cursor. */
async function allTasks(cloud: Cloud, query: string, token = TOKENS.admin): Promise<FleetTaskSummary[]> {
  const tasks: FleetTaskSummary[] = [];
  for (let cursor: string | null = ''; cursor !== null; ) {
    const { status, body } = await json(cloud, `/v1/tasks?${query}${cursor ? `&cursor=${cursor}` : ''}`, token);
    expect(status).toBe(200);
    tasks.push(...(body as TasksPage).tasks);
    cursor = (body as TasksPage).next_cursor;
  }
  return tasks;
}

/** What a task list holds for these records: the daemon's task view, steps without their large fields, newest first. */
function expectedSummaries(machineId: string, records: ChainRecord[]): FleetTaskSummary[] {
  return [...tasksFromRecords(records).values()]
    .map((task) => ({ ...task, machine_id: machineId, steps: task.steps.map(({ output: _o, error: _e, recovery: _r, ...step }) => step) }))
    .reverse();
}

/** The chain links a task's answer should carry: every pushed record of the task, in seq order, with its own hashes. */
function expectedChain(records: ChainRecord[], taskId: string): ChainLink[] {
  return records
    .filter((record) => 'task_id' in record && record.task_id === taskId)
    .map((record) => ({ seq: record.seq, type: record.type as ChainLink['type'], hash: record.hash, prev_hash: record.prev_hash }));
}

/** The raw answer to bytes sent on a fresh TCP connection to the endpoint. */
function rawExchange(cloud: Cloud, bytes: string): Promise<string> {
  const { hostname, port } = new URL(cloud.httpBase);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => socket.end(bytes));
    let answer = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (answer += chunk));
    socket.on('close', () => resolve(answer));
    socket.on('error', reject);
  });
}

describe.each(cloudBackends())('fleet queries on the $name backend', (backend) => {
  async function fleet(): Promise<{ cloud: Cloud; m1: ChainRecord[]; m2: ChainRecord[] }> {
    const cloud = await startCloud(await backend.newSite(), { tokensFile: tokensFile() });
    // m1: 8 tasks (the last running), agent claude; m2: 4 tasks, agent codex, created later.
    const m1 = makeChain(38, { tag: 'a', agent: 'claude' });
    const m2 = makeChain(20, { tag: 'b', machineId: 'm2', agent: 'codex', startTs: 1_700_001_000 });
    await (await openCloudSocket(cloud.url, TOKENS.m1)).call('push', { machine_id: 'm1', records: m1 });
    await (await openCloudSocket(cloud.url, TOKENS.m2)).call('push', { machine_id: 'm2', records: m2 });
    return { cloud, m1, m2 };
  }

  it('lists machines with their heads and counts; a machine token sees its own only', async () => {
    const { cloud, m1, m2 } = await fleet();
    const { status, body } = await json(cloud, '/v1/machines');
    expect(status).toBe(200);
    expect(body.next_cursor).toBeNull();
    expect(body.machines).toEqual([
      { machine_id: 'm1', acked_seq: 38, head_hash: m1[37].hash, last_push_at: expect.any(String), tasks: 8, running: 1, incidents: 0 },
      { machine_id: 'm2', acked_seq: 20, head_hash: m2[19].hash, last_push_at: expect.any(String), tasks: 4, running: 0, incidents: 0 },
    ]);
    expect(Date.now() - Date.parse(body.machines[0].last_push_at)).toBeLessThan(600_000);
    const paged = await json(cloud, '/v1/machines?limit=1');
    expect(paged.body.machines.map((m: { machine_id: string }) => m.machine_id)).toEqual(['m1']);
    const second = await json(cloud, `/v1/machines?limit=1&cursor=${paged.body.next_cursor}`);
    expect(second.body).toEqual({ machines: [body.machines[1]], next_cursor: null });
    expect((await json(cloud, '/v1/machines', TOKENS.m2)).body.machines).toEqual([body.machines[1]]);
    expect((await httpGet(cloud, '/v1/machines')).status).toBe(401);
    expect((await httpGet(cloud, '/v1/machines', 'not-a-token')).status).toBe(401);
  });

  it('lists tasks newest first across the fleet, paged by cursor, filtered by machine, agent, status, time and text', async () => {
    const { cloud, m1, m2 } = await fleet();
    const everything = [...expectedSummaries('m2', m2), ...expectedSummaries('m1', m1)];
    expect(await allTasks(cloud, 'limit=500')).toEqual(everything);
    expect(await allTasks(cloud, 'limit=5')).toEqual(everything);
    const first = await json(cloud, '/v1/tasks?limit=3');
    expect(first.body.tasks).toHaveLength(3);
    expect(first.body.tasks[0].steps[0]).not.toHaveProperty('output');

    expect(await allTasks(cloud, 'machine=m1&limit=3')).toEqual(expectedSummaries('m1', m1));
    expect(await allTasks(cloud, 'agent=codex')).toEqual(expectedSummaries('m2', m2));
    expect((await allTasks(cloud, 'status=running')).map((t) => t.task_id)).toEqual(['task-a-7']);
    expect((await allTasks(cloud, 'status=failed&machine=m2')).map((t) => t.task_id)).toEqual(['task-b-3', 'task-b-1']);
    // Records ts: m1 task n is created at 1_700_000_000 + 5n.
    expect((await allTasks(cloud, 'machine=m1&since=1700000010&until=1700000020')).map((t) => t.task_id)).toEqual(['task-a-4', 'task-a-3', 'task-a-2']);
    const iso = new Date(1_700_001_010 * 1000).toISOString();
    expect((await allTasks(cloud, `since=${encodeURIComponent(iso)}`)).map((t) => t.task_id)).toEqual(['task-b-3', 'task-b-2']);
    // q: a step's command (record 8 is task 1's step "cmd 7"), a description, case-insensitively.
    expect((await allTasks(cloud, 'q=cmd%207&machine=m1')).map((t) => t.task_id)).toEqual(['task-a-1']);
    expect((await allTasks(cloud, 'q=TASK%202%20(B)')).map((t) => t.task_id)).toEqual(['task-b-2']);
    expect(await allTasks(cloud, 'q=nothing-like-this')).toEqual([]);

    // A machine token reads its own machine's tasks only.
    expect(await allTasks(cloud, '', TOKENS.m1)).toEqual(expectedSummaries('m1', m1));
    expect((await httpGet(cloud, '/v1/tasks?machine=m2', TOKENS.m1)).status).toBe(403);
    expect((await httpGet(cloud, '/v1/tasks?machine=never-seen', TOKENS.admin)).status).toBe(404);
  });

  it('answers 400 naming the parameter for every bad query', async () => {
    const { cloud } = await fleet();
    for (const [path, parameter] of [
      ['/v1/tasks?limit=0', 'limit'],
      ['/v1/tasks?limit=501', 'limit'],
      ['/v1/tasks?limit=ten', 'limit'],
      ['/v1/tasks?status=done', 'status'],
      ['/v1/tasks?since=yesterday', 'since'],
      ['/v1/tasks?until=', 'until'],
      ['/v1/tasks?q=', 'q'],
      ['/v1/tasks?cursor=not-a-cursor', 'cursor'],
      ['/v1/tasks?colour=red', 'colour'],
      ['/v1/tasks?agent=a&agent=b', 'agent'],
      ['/v1/machines?cursor=eyJ4IjoxfQ', 'cursor'],
      ['/v1/machines?limit=-1', 'limit'],
      ['/v1/incidents?since=soon', 'since'],
      ['/v1/incidents?cursor=WyJhIl0', 'cursor'],
      ['/v1/machines/m1/task_history.json?max_tasks=0', 'max_tasks'],
    ] as const) {
      const { status, body } = await json(cloud, path);
      expect({ path, status, parameter: body.parameter }).toEqual({ path, status: 400, parameter });
      expect(body.error).toContain(parameter);
    }
    expect((await json(cloud, '/v1/machines/m1/tasks/%E0%A4%A')).status).toBe(400);
  });

  it('serves one task with every step, its large fields and each record\'s seq and hashes; 404 for an unknown machine or task, 403 for another machine', async () => {
    const { cloud, m1 } = await fleet();
    const { status, body } = await json(cloud, '/v1/machines/m1/tasks/task-a-2');
    expect(status).toBe(200);
    const chain = expectedChain(m1, 'task-a-2');
    expect(body).toEqual({ ...tasksFromRecords(m1).get('task-a-2'), machine_id: 'm1', chain });
    expect(body.steps[0].output).toBe('output of record 12');
    // The creation, every step and the completion, each linked to the pushed record before it.
    expect(chain.map((link) => link.type)).toEqual(['task_created', ...body.steps.map(() => 'step_logged'), 'task_completed']);
    for (const link of chain) expect(link.prev_hash).toBe(m1[link.seq - 2].hash);
    const running = (await json(cloud, '/v1/machines/m1/tasks/task-a-7', TOKENS.m1)).body;
    expect(running.status).toBe('running');
    expect(running.chain).toEqual(expectedChain(m1, 'task-a-7'));
    expect(running.chain.at(-1).type).not.toBe('task_completed');
    expect((await httpGet(cloud, '/v1/machines/m1/tasks/no-such-task', TOKENS.admin)).status).toBe(404);
    expect((await httpGet(cloud, '/v1/machines/never-seen/tasks/task-a-2', TOKENS.admin)).status).toBe(404);
    expect((await httpGet(cloud, '/v1/machines/m1/tasks/task-a-2', TOKENS.m2)).status).toBe(403);
    expect((await httpGet(cloud, '/v1/machines/m1/tasks/task-a-2')).status).toBe(401);
  });

  it('records every refused batch as an incident, listed newest first and counted per machine', async () => {
    const { cloud, m1 } = await fleet();
    const socket = await openCloudSocket(cloud.url, TOKENS.m1);
    const other = makeChain(40, { tag: 'other' });
    expect((await errorOf(socket.call('push', { machine_id: 'm1', records: [other[38]] }))).data.reason).toBe('fork');
    const tampered = { ...m1[2], output: 'rewritten history' };
    expect((await errorOf(socket.call('push', { machine_id: 'm1', records: [tampered] }))).code).toBe(ErrorCodes.ChainMismatch);

    const { status, body } = await json(cloud, '/v1/incidents');
    expect(status).toBe(200);
    expect(body.incidents).toEqual([
      { machine_id: 'm1', seq: 3, reason: 'altered', detail: expect.stringContaining('seq 3'), at: expect.any(String) },
      { machine_id: 'm1', seq: 39, reason: 'fork', detail: expect.any(String), at: expect.any(String) },
    ]);
    const page = await json(cloud, '/v1/incidents?limit=1');
    expect(page.body.incidents).toEqual([body.incidents[0]]);
    expect((await json(cloud, `/v1/incidents?limit=1&cursor=${page.body.next_cursor}`)).body).toEqual({ incidents: [body.incidents[1]], next_cursor: null });
    expect((await json(cloud, '/v1/incidents?machine=m2')).body.incidents).toEqual([]);
    expect((await json(cloud, '/v1/incidents', TOKENS.m2)).body.incidents).toEqual([]);
    expect((await json(cloud, '/v1/incidents', TOKENS.m1)).body.incidents).toHaveLength(2);
    expect((await json(cloud, '/v1/incidents?since=2999-01-01T00:00:00Z')).body.incidents).toEqual([]);
    expect((await json(cloud, '/v1/machines?limit=1')).body.machines[0].incidents).toBe(2);
  });

  it('serves health, readiness and Prometheus metrics without a token', async () => {
    const { cloud } = await fleet();
    expect(await json(cloud, '/healthz', '')).toEqual({ status: 200, body: { status: 'serving' } });
    expect(await json(cloud, '/readyz', '')).toEqual({ status: 200, body: { status: 'ready' } });
    const metrics = await httpGet(cloud, '/metrics');
    expect(metrics.headers.get('content-type')).toContain('text/plain');
    const text = await metrics.text();
    expect(text).toMatch(/^taskhistory_cloud_records_stored_total 58$/m);
    expect(text).toMatch(/^taskhistory_cloud_push_duration_seconds_count 2$/m);
    expect(text).toMatch(/^taskhistory_cloud_connections 2$/m);
    for (const name of ['taskhistory_cloud_push_refused_total', 'taskhistory_cloud_storage_pool_in_use', 'taskhistory_cloud_storage_pool_waiting']) {
      expect(text).toContain(`# TYPE ${name}`);
    }
  });

  it('streams a stored event for every push the token may read', async () => {
    const { cloud, m1 } = await fleet();
    const controller = new AbortController();
    const response = await fetch(`${cloud.httpBase}/v1/events`, { headers: { authorization: `Bearer ${TOKENS.m2}` }, signal: controller.signal });
    expect(response.headers.get('content-type')).toBe('text/event-stream');
    const reader = response.body!.getReader();
    let text = '';
    const more = makeChain(45, { tag: 'a', agent: 'claude' });
    await (await openCloudSocket(cloud.url, TOKENS.m1)).call('push', { machine_id: 'm1', records: more.slice(m1.length) });
    await (await openCloudSocket(cloud.url, TOKENS.m2)).call('push', { machine_id: 'm2', records: makeChain(22, { tag: 'b', machineId: 'm2', agent: 'codex', startTs: 1_700_001_000 }).slice(20) });
    const expected = `event: stored\ndata: ${JSON.stringify({ machine_id: 'm2', first_seq: 21, last_seq: 22 })}\n\n`;
    await waitFor(async () => {
      text += new TextDecoder().decode((await reader.read()).value);
      return text.includes(expected);
    }, 10_000, 'the stored event of the second push');
    controller.abort();
    // m2's token hears m2's pushes only (the first may arrive too: the feed is live, not a replay).
    expect(text).not.toContain('"machine_id":"m1"');
  });

  it('answers malformed request targets 400 and keeps serving', async () => {
    const { cloud } = await fleet();
    const upgrade = 'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n';
    expect(await rawExchange(cloud, `GET // HTTP/1.1\r\nHost: x\r\n${upgrade}\r\n`)).toMatch(/^HTTP\/1\.1 400 /);
    expect(await rawExchange(cloud, 'GET // HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).toMatch(/^HTTP\/1\.1 400 /);
    expect(await rawExchange(cloud, 'GET http://x/v1/machines HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).toMatch(/^HTTP\/1\.1 400 /);
    expect(await rawExchange(cloud, 'NOT HTTP AT ALL\r\n\r\n')).toMatch(/^HTTP\/1\.1 400 /);
    expect((await json(cloud, '/healthz')).status).toBe(200);
    expect(cloud.proc.exitCode).toBeNull();
  });
});
