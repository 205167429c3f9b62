import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import WebSocket from 'ws';
import { sha256Hex } from '../../node/sha256.js';
import { ErrorCodes } from '../../protocol/errors.js';
import { chainRecord, GENESIS_HASH, type ChainPoint, type ChainRecord, type UnchainedRecord } from '../../protocol/records.js';
import { startPostgres, type PostgresCluster } from '../../node/postgres-cluster.js';
import type { Row } from '../report.js';
import { CLOUD_BIN, spawnServer, type ServerProcess } from '../servers.js';
import { median, nowMs, summarize, type LatencySummary } from '../stats.js';
import type { BenchContext } from './context.js';

/**
 * Scenario 7, the fleet tier: 1,000 simulated machines (each a real chain built with the project's
 * record code) push 100 records each, concurrently, in batches of 10, through 2 endpoint processes
 * into one PostgreSQL (fsync on); the same pushes through the file backend's single endpoint for
 * comparison. Then the fleet is grown to 1,000,000 records and `GET /v1/tasks` is timed (by agent,
 * by status, by text), and endpoint start-up is timed at that size beside an empty database's.
 */
const MACHINES = 1000;
const FIRST_RECORDS = 100;
const PUSH_BATCH = 10;
const TOTAL_RECORDS = 1_000_000;
/** Machines loaded at once while growing the fleet. */
const GROW_PARALLEL = 20;
/** Growing to 1,000,000 records may not fit a busy machine's run: stop growing after this and say so. */
const GROW_LIMIT_MS = 600_000;
const QUERY_REPEATS = 100;
const STARTUP_REPEATS = 3;
const RECORDS_PER_TASK = 10;
const AGENTS = ['claude', 'codex', 'aider', 'cursor'];
const TARGET_RECORDS_PER_S = 10_000;
const TARGET_QUERY_P99_MS = 50;
const TARGET_STARTUP_RATIO = 1.5;

const machineId = (index: number) => `fleet-${String(index).padStart(4, '0')}`;
const tokenOf = (index: number) => `bench-fleet-token-${index}-0123456789`;
const ADMIN_TOKEN = 'bench-fleet-admin-0123456789';

/** Records seq from..from+count-1 of a machine's chain after `prev`: tasks of one creation, 8 steps, one completion. */
function chainPart(index: number, prev: ChainPoint, count: number): ChainRecord[] {
  const records: ChainRecord[] = [];
  for (let i = 0; i < count; i++) {
    const seq = prev.seq + 1;
    const position = (seq - 1) % RECORDS_PER_TASK;
    const taskNumber = Math.floor((seq - 1) / RECORDS_PER_TASK);
    const taskId = `${machineId(index)}-task-${taskNumber}`;
    const ts = 1_700_000_000 + seq + index / MACHINES;
    const body: UnchainedRecord =
      position === 0
        ? { type: 'task_created', task_id: taskId, description: `release ${taskNumber} of service ${index % 50}`, mode: 'autonomous', plan: ['build', 'test', 'deploy'], machine_id: machineId(index), agent: AGENTS[index % AGENTS.length], ts }
        : position === RECORDS_PER_TASK - 1
          ? { type: 'task_completed', task_id: taskId, final_status: taskNumber % 7 === 3 ? 'failed' : 'completed', ts }
          : { type: 'step_logged', task_id: taskId, step: position, command: `make deploy-${taskNumber % 97} step ${position}`, status: 'success', output: `ok ${seq}`, duration_ms: 12, exit_code: 0, ts };
    const record = chainRecord(body, prev.seq, prev.hash, sha256Hex);
    records.push(record);
    prev = { seq: record.seq, hash: record.hash };
  }
  return records;
}

interface RpcFailure {
  code: number;
  message: string;
  data?: { retry_after_ms?: number };
}

/** One machine's sync connection: JSON-RPC requests one at a time. */
class PushClient {
  private nextId = 0;
  private constructor(private readonly ws: WebSocket) {}

  static open(url: string, token: string): Promise<PushClient> {
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}` } });
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new PushClient(ws)));
      ws.once('error', reject);
    });
  }

  /** Pushes; an overloaded endpoint's StorageFailure is retried after its retry_after_ms, as the daemon does. */
  async push(machine: string, records: ChainRecord[], retries: { count: number }): Promise<void> {
    for (;;) {
      const error = await this.request(machine, records);
      if (!error) return;
      if (error.code !== ErrorCodes.StorageFailure) throw new Error(`push for ${machine} refused: ${error.message}`);
      retries.count++;
      await new Promise((done) => setTimeout(done, error.data?.retry_after_ms ?? 1000));
    }
  }

  private request(machine: string, records: ChainRecord[]): Promise<RpcFailure | null> {
    const id = String(++this.nextId);
    return new Promise((resolve, reject) => {
      const onClose = (code: number) => reject(new Error(`the endpoint closed ${machine}'s connection (code ${code}) before answering a push`));
      const onMessage = (data: WebSocket.RawData) => {
        const answer = JSON.parse(data.toString()) as { id: string; error?: RpcFailure };
        if (answer.id !== id) return;
        this.ws.off('message', onMessage);
        this.ws.off('close', onClose);
        resolve(answer.error ?? null);
      };
      this.ws.once('close', onClose);
      this.ws.on('message', onMessage);
      this.ws.send(JSON.stringify({ jsonrpc: '2.0', id, method: 'push', params: { machine_id: machine, records } }));
    });
  }

  close(): void {
    this.ws.close();
  }
}

async function startEndpoint(storageArgs: string[], tokensFile: string): Promise<{ process: ServerProcess; url: string; startupMs: number }> {
  const started = nowMs();
  const endpoint = spawnServer('taskhistory-cloud', [CLOUD_BIN, '--port', '0', ...storageArgs, '--tokens-file', tokensFile]);
  let exitCode: number | null | undefined;
  void endpoint.exited.then((code) => (exitCode = code));
  for (;;) {
    const url = /listening url=(\S+)/.exec(endpoint.stderr())?.[1];
    if (url) return { process: endpoint, url, startupMs: nowMs() - started };
    if (exitCode !== undefined) throw new Error(`taskhistory-cloud exited (code ${exitCode}) during start-up:\n${endpoint.stderr()}`);
    await new Promise((done) => setTimeout(done, 2));
  }
}

interface PushOutcome {
  perSecond: number;
  latency: LatencySummary;
  /** Pushes answered StorageFailure (overloaded) and sent again. */
  retries: number;
}

/** Every machine pushes `count` records after its head in batches; returns records/s and push latencies (retries included). */
async function pushFleet(urls: string[], heads: ChainPoint[], count: number, batch: number): Promise<PushOutcome> {
  // Chains first: building them holds the event loop, and an endpoint drops a connection that misses its ping.
  const parts = heads.map((head, index) => chainPart(index, head, count));
  const clients = await Promise.all(heads.map((_, index) => PushClient.open(urls[index % urls.length], tokenOf(index))));
  const latencies: number[] = [];
  const retries = { count: 0 };
  const started = nowMs();
  await Promise.all(
    clients.map(async (client, index) => {
      for (let from = 0; from < count; from += batch) {
        const records = parts[index].slice(from, from + batch);
        const sent = nowMs();
        await client.push(machineId(index), records, retries);
        latencies.push(nowMs() - sent);
      }
    }),
  );
  const elapsedS = (nowMs() - started) / 1000;
  for (const client of clients) client.close();
  parts.forEach((part, index) => (heads[index] = { seq: part.at(-1)!.seq, hash: part.at(-1)!.hash }));
  return { perSecond: (heads.length * count) / elapsedS, latency: summarize(latencies), retries: retries.count };
}

/**
 * Loads each machine's chain up to `perMachine` records, a few machines at a time, one push each:
 * the loading is not measured, and 1,000 connections each sending a large batch at once would hold
 * both event loops past the endpoints' ping interval on a busy machine.
 */
async function growFleet(urls: string[], heads: ChainPoint[], perMachine: number, deadlineMs: number): Promise<void> {
  const retries = { count: 0 };
  for (let first = 0; first < heads.length && nowMs() < deadlineMs; first += GROW_PARALLEL) {
    await Promise.all(
      heads.slice(first, first + GROW_PARALLEL).map(async (head, offset) => {
        const index = first + offset;
        if (head.seq >= perMachine) return;
        const part = chainPart(index, head, perMachine - head.seq);
        const client = await PushClient.open(urls[index % urls.length], tokenOf(index));
        try {
          await client.push(machineId(index), part, retries);
        } finally {
          client.close();
        }
        heads[index] = { seq: part.at(-1)!.seq, hash: part.at(-1)!.hash };
      }),
    );
  }
}

async function timeQueries(httpBase: string, query: string): Promise<LatencySummary> {
  const samples: number[] = [];
  for (let i = 0; i < QUERY_REPEATS; i++) {
    const started = nowMs();
    const response = await fetch(`${httpBase}/v1/tasks?${query}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    await response.arrayBuffer();
    samples.push(nowMs() - started);
  }
  return summarize(samples);
}

async function medianStartupMs(storageArgs: string[], tokensFile: string): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < STARTUP_REPEATS; i++) {
    const endpoint = await startEndpoint(storageArgs, tokensFile);
    times.push(endpoint.startupMs);
    await endpoint.process.stop();
  }
  return median(times);
}

interface FleetOutcome {
  postgres: PushOutcome;
  file: PushOutcome;
  storedRecords: number;
  queries: Record<'agent' | 'status' | 'text', LatencySummary>;
  startup: { full: number; empty: number };
}

export async function runFleet(context: BenchContext): Promise<Row[]> {
  let outcome: FleetOutcome | null = null;
  try {
    outcome = await measureFleet(context);
  } catch (error) {
    context.note(`7 fleet: not measured: ${(error as Error).message.split('\n')[0]}`);
  }
  const stored = (outcome?.storedRecords ?? TOTAL_RECORDS).toLocaleString('en-US');
  const pushes = `${MACHINES.toLocaleString('en-US')} machines x ${FIRST_RECORDS} records`;
  return [
    { scenario: `7 fleet push, ${pushes}, PostgreSQL, 2 endpoints`, metric: 'records/s stored', ours: outcome?.postgres.perSecond ?? null, target: { atLeast: TARGET_RECORDS_PER_S } },
    { scenario: `7 fleet push, ${pushes}, file backend, 1 endpoint`, metric: 'records/s stored', ours: outcome?.file.perSecond ?? null },
    { scenario: `7 fleet push, ${pushes}, PostgreSQL, 2 endpoints`, metric: `push of ${PUSH_BATCH} p99 ms`, ours: outcome?.postgres.latency.p99 ?? null },
    { scenario: `7 fleet push, ${pushes}, file backend, 1 endpoint`, metric: `push of ${PUSH_BATCH} p99 ms`, ours: outcome?.file.latency.p99 ?? null },
    ...(['agent', 'status', 'text'] as const).flatMap((filter): Row[] => [
      { scenario: `7 fleet GET /v1/tasks by ${filter}, ${stored} records`, metric: 'p50 ms', ours: outcome?.queries[filter].p50 ?? null },
      { scenario: `7 fleet GET /v1/tasks by ${filter}, ${stored} records`, metric: 'p99 ms', ours: outcome?.queries[filter].p99 ?? null, target: { atMost: TARGET_QUERY_P99_MS } },
    ]),
    { scenario: '7 fleet endpoint start-up, empty database', metric: 'ms (median of 3)', ours: outcome?.startup.empty ?? null },
    { scenario: `7 fleet endpoint start-up, ${stored} records`, metric: 'ms (median of 3)', ours: outcome?.startup.full ?? null },
    {
      scenario: `7 fleet start-up ${stored} records / empty`,
      metric: 'ratio',
      ours: outcome ? outcome.startup.full / outcome.startup.empty : null,
      target: { atMost: TARGET_STARTUP_RATIO },
    },
  ];
}

async function measureFleet(context: BenchContext): Promise<FleetOutcome> {
  const dir = context.freshDir('fleet');
  const tokensFile = join(dir, 'tokens.json');
  const tokens = [...Array.from({ length: MACHINES }, (_, index) => ({ token: tokenOf(index), machine_id: machineId(index) })), { token: ADMIN_TOKEN, admin: true }];
  writeFileSync(tokensFile, JSON.stringify({ tokens }), { mode: 0o600 });

  context.say(`fleet: file backend, ${MACHINES} machines pushing ${FIRST_RECORDS} records each through 1 endpoint...`);
  const fileEndpoint = await startEndpoint(['--data-dir', join(dir, 'file-data')], tokensFile);
  let file: PushOutcome;
  try {
    file = await pushFleet([fileEndpoint.url], Array.from({ length: MACHINES }, () => ({ seq: 0, hash: GENESIS_HASH })), FIRST_RECORDS, PUSH_BATCH);
  } finally {
    await fileEndpoint.process.stop();
  }

  context.say('fleet: starting a throwaway PostgreSQL (fsync on)...');
  const cluster: PostgresCluster = startPostgres({ durable: true });
  try {
    const storageArgs = ['--database-url', await cluster.createDatabase()];
    const emptyArgs = ['--database-url', await cluster.createDatabase()];
    const endpoints = [await startEndpoint(storageArgs, tokensFile), await startEndpoint(storageArgs, tokensFile)];
    try {
      const heads = Array.from({ length: MACHINES }, () => ({ seq: 0, hash: GENESIS_HASH }));
      context.say(`fleet: PostgreSQL, ${MACHINES} machines pushing ${FIRST_RECORDS} records each through 2 endpoints...`);
      const postgres = await pushFleet(endpoints.map((e) => e.url), heads, FIRST_RECORDS, PUSH_BATCH);
      for (const [name, outcome] of [['PostgreSQL', postgres], ['file backend', file]] as const) {
        if (outcome.retries) context.note(`7 fleet: ${outcome.retries} pushes through the ${name} were answered StorageFailure (busy) and sent again after retry_after_ms, as a daemon does; their latency includes the wait.`);
      }
      context.say(`fleet: growing the database to ${TOTAL_RECORDS.toLocaleString('en-US')} records...`);
      await growFleet(endpoints.map((e) => e.url), heads, TOTAL_RECORDS / MACHINES, nowMs() + GROW_LIMIT_MS);
      const storedRecords = heads.reduce((sum, head) => sum + head.seq, 0);
      if (storedRecords < TOTAL_RECORDS) context.note(`7 fleet: growing stopped at ${storedRecords.toLocaleString('en-US')} records after ${GROW_LIMIT_MS / 1000} s; the queries and start-up are timed at that size.`);
      context.say('fleet: timing GET /v1/tasks...');
      const httpBase = endpoints[0].url.replace(/^ws/, 'http').replace(/\/v1\/sync$/, '');
      const queries = {
        agent: await timeQueries(httpBase, 'agent=codex&limit=50'),
        status: await timeQueries(httpBase, 'status=failed&limit=50'),
        text: await timeQueries(httpBase, 'q=deploy-42&limit=50'),
      };
      for (const endpoint of endpoints) await endpoint.process.stop();
      endpoints.length = 0;
      context.say('fleet: timing endpoint start-up...');
      const startup = { full: await medianStartupMs(storageArgs, tokensFile), empty: await medianStartupMs(emptyArgs, tokensFile) };
      return { postgres, file, storedRecords, queries, startup };
    } finally {
      for (const endpoint of endpoints) await endpoint.process.stop();
    }
  } finally {
    cluster.destroy();
  }
}
