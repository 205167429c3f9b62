import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import WebSocket from 'ws';
import { sha256Hex } from '../node/sha256.js';
import { chainRecord, GENESIS_HASH, type ChainRecord, type UnchainedRecord } from '../protocol/records.js';
import { CLOUD_BIN, RawSocket } from './daemon-harness.js';
import { spawnTracked, tempDir, waitFor, type Spawned } from './processes.js';

/**
 * Cloud endpoints for tests, on either storage backend. A site is one store (a data dir, or a
 * database of the file's throwaway PostgreSQL cluster) that endpoints are started on, restarted
 * on, or shared by.
 */
export interface StorageSite {
  backend: BackendName;
  /** The storage flags: `--data-dir DIR` or `--database-url URL`. */
  args: string[];
}
export type BackendName = 'file' | 'postgres';

export interface CloudBackend {
  name: BackendName;
  newSite(): Promise<StorageSite>;
}

export const fileBackend: CloudBackend = {
  name: 'file',
  async newSite() {
    return { backend: 'file', args: ['--data-dir', join(tempDir('cloud-'), 'data')] };
  },
};

export interface Cloud extends Spawned {
  url: string;
  httpBase: string;
}

export type TokenEntry = { token: string; machine_id: string } | { token: string; admin: true };

export function writeTokensFile(entries: TokenEntry[], mode = 0o600): string {
  const path = join(tempDir('cloud-tokens-'), 'tokens.json');
  writeFileSync(path, JSON.stringify({ tokens: entries }));
  chmodSync(path, mode);
  return path;
}

/** Starts `taskhistory-cloud` on the site and waits for its `listening` line. */
export async function startCloud(site: StorageSite, options: { tokensFile?: string; port?: number; args?: string[] } = {}): Promise<Cloud> {
  const args = [CLOUD_BIN, '--port', String(options.port ?? 0), ...site.args, ...(options.tokensFile ? ['--tokens-file', options.tokensFile] : []), ...(options.args ?? [])];
  const child = spawnTracked(process.execPath, args);
  const url = await waitFor(() => {
    if (child.proc.exitCode !== null) throw new Error(`cloud exited during start-up:\n${child.stderr()}`);
    return /<6>listening url=(\S+)/.exec(child.stderr())?.[1];
  }, 20_000, 'the cloud to listen');
  return { ...child, url, httpBase: url.replace(/^ws/, 'http').replace(/\/v1\/sync$/, '') };
}

export async function openCloudSocket(url: string, token: string): Promise<RawSocket> {
  const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}` } });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  return new RawSocket(ws);
}

/** The HTTP status a WebSocket upgrade gets (101 when accepted), and its Retry-After header. */
export function upgradeAnswer(url: string, headers: Record<string, string>): Promise<{ status: number; retryAfter?: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.once('unexpected-response', (_req, res) => {
      resolve({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'] });
      ws.terminate();
    });
    ws.once('open', () => {
      resolve({ status: 101 });
      ws.close();
    });
    ws.on('error', (error) => reject(error));
  });
}

export function httpGet(cloud: Cloud, path: string, token?: string): Promise<Response> {
  return fetch(`${cloud.httpBase}${path}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
}

export interface ChainOptions {
  tag?: string;
  startTs?: number;
  machineId?: string;
  agent?: string;
}

/** A chain of `count` records: tasks of created, three steps, completed (odd tasks fail); the last task may stay running. */
export function makeChain(count: number, { tag = 'a', startTs = 1_700_000_000, machineId = 'm1', agent }: ChainOptions = {}): ChainRecord[] {
  const records: ChainRecord[] = [];
  let prev = { seq: 0, hash: GENESIS_HASH };
  for (let i = 0; i < count; i++) {
    const taskNumber = Math.floor(i / 5);
    const taskId = `task-${tag}-${taskNumber}`;
    const ts = startTs + i;
    const body: UnchainedRecord =
      i % 5 === 0
        ? { type: 'task_created', task_id: taskId, description: `task ${taskNumber} (${tag})`, mode: 'autonomous', plan: ['one', 'two', 'three'], machine_id: machineId, ts, ...(agent !== undefined && { agent }) }
        : i % 5 === 4
          ? { type: 'task_completed', task_id: taskId, final_status: taskNumber % 2 ? 'failed' : 'completed', ts }
          : { type: 'step_logged', task_id: taskId, step: i % 5, command: `cmd ${i}`, status: 'success', output: `output of record ${i + 1}`, duration_ms: 3, exit_code: 0, ts };
    const record = chainRecord(body, prev.seq, prev.hash, sha256Hex);
    records.push(record);
    prev = { seq: record.seq, hash: record.hash };
  }
  return records;
}

export async function pullAll(socket: RawSocket, machineId: string): Promise<ChainRecord[]> {
  const records: ChainRecord[] = [];
  for (;;) {
    const page = await socket.call('pull', { machine_id: machineId, after_seq: records.length, limit: 5000 });
    records.push(...page.records);
    if (!page.more) return records;
  }
}

export async function errorOf(promise: Promise<unknown>): Promise<{ code: number; message: string; data?: any }> {
  try {
    await promise;
  } catch (error) {
    return error as { code: number; message: string; data?: any };
  }
  throw new Error('expected an error answer');
}
