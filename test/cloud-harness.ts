import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import WebSocket from 'ws';
import { CLOUD_BIN, RawSocket } from './daemon-harness.js';
import { spawnTracked, tempDir, waitFor, type Spawned } from './processes.js';

export const CLOUD_TOKENS = { m1: 'token-m1-0123456789', m2: 'token-m2-0123456789', admin: 'token-admin-0123456789' };

export interface Cloud extends Spawned {
  url: string;
  port: number;
  dataDir: string;
}

/** Starts `taskhistory-cloud` (file backend) on a free loopback port and waits for its `listening` line. */
export async function startCloud(dataDir = join(tempDir('cloud-'), 'data')): Promise<Cloud> {
  const tokensFile = join(tempDir('cloud-tokens-'), 'tokens.json');
  const tokens = [
    { token: CLOUD_TOKENS.m1, machine_id: 'm1' },
    { token: CLOUD_TOKENS.m2, machine_id: 'm2' },
    { token: CLOUD_TOKENS.admin, admin: true },
  ];
  writeFileSync(tokensFile, JSON.stringify({ tokens }));
  chmodSync(tokensFile, 0o600);
  const child = spawnTracked(process.execPath, [CLOUD_BIN, '--port', '0', '--data-dir', dataDir, '--tokens-file', tokensFile]);
  const url = await waitFor(() => {
    if (child.proc.exitCode !== null) throw new Error(`cloud exited during start-up:\n${child.stderr()}`);
    return /<6>listening url=(\S+)/.exec(child.stderr())?.[1];
  }, 15_000, 'the cloud to listen');
  return { ...child, url, port: Number(new URL(url).port), dataDir };
}

/** An authenticated sync WebSocket to the cloud. */
export async function openCloudSocket(cloud: Cloud, token: string): Promise<RawSocket> {
  const ws = new WebSocket(cloud.url, { headers: { authorization: `Bearer ${token}` } });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  return new RawSocket(ws);
}
