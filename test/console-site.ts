import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startCloud, writeTokensFile, type Cloud, type StorageSite, type TokenEntry } from './cloud-harness.js';
import { openRawSocket, startDaemon, type Daemon, type RawSocket } from './daemon-harness.js';
import { tempDir, waitFor } from './processes.js';

/** Real daemons, one per machine id, pushing to a real taskhistory-cloud that serves the console. */
export interface ConsoleSite {
  storage: StorageSite;
  cloud: Cloud;
  /** The token the browser signs in with (reads every machine), and each machine's push token. */
  tokens: { reader: string; machine: Record<string, string> };
  tokensFile: string;
  port: number;
}

export function machineTokens(machineIds: string[]): Record<string, string> {
  return Object.fromEntries(machineIds.map((id) => [id, `console-push-token-${id}-0123456789abcdef`]));
}

/** The file backend's tokens: an admin token to read with (the tokens file has no viewer scope) and one per machine. */
export function fileSiteTokens(machineIds: string[], reader = 'console-admin-token-0123456789abcdef'): { entries: TokenEntry[]; reader: string; machine: Record<string, string> } {
  const machine = machineTokens(machineIds);
  return { entries: [{ token: reader, admin: true }, ...machineIds.map((id) => ({ token: machine[id], machine_id: id }))], reader, machine };
}

export async function startConsoleSite(storage: StorageSite, machineIds: string[]): Promise<ConsoleSite> {
  const tokens = fileSiteTokens(machineIds);
  const tokensFile = writeTokensFile(tokens.entries);
  const cloud = await startCloud(storage, { tokensFile });
  const port = Number(new URL(cloud.httpBase).port);
  return { storage, cloud, tokens: { reader: tokens.reader, machine: tokens.machine }, tokensFile, port };
}

/** A real daemon as machine `machineId`, pushing every record to `syncUrl`, and a socket to it. */
export async function startPushingDaemon(syncUrl: string, machineId: string, token: string): Promise<{ daemon: Daemon; socket: RawSocket }> {
  const tokenFile = join(tempDir('console-token-'), 'token');
  writeFileSync(tokenFile, `${token}\n`);
  chmodSync(tokenFile, 0o600);
  const daemon = await startDaemon({
    args: ['--machine-id', machineId, '--cloud-url', syncUrl, '--cloud-token-file', tokenFile, '--cloud-retry-max-ms', '200'],
  });
  return { daemon, socket: await openRawSocket(daemon.socketPath) };
}

/** Waits until the endpoint has acknowledged everything the daemon committed. */
export async function waitForPushed(socket: RawSocket): Promise<void> {
  await waitFor(async () => {
    const status = await socket.call('status', {});
    return status.cloud.state === 'online' && status.cloud.queued === 0 && status.cloud.acked_seq === status.last_seq;
  }, 30_000, 'the endpoint to acknowledge every record');
}
