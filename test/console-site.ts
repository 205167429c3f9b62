import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLOUD_BIN, openRawSocket, startDaemon, type Daemon, type RawSocket } from './daemon-harness.js';
import { spawnTracked, tempDir, waitFor, type Spawned } from './processes.js';

/** A real taskhistory-cloud (file backend) and the tokens the console tests sign in with. */
export interface ConsoleSite {
  cloud: Spawned;
  /** ws://…/v1/sync, for daemons. */
  syncUrl: string;
  /** http://host:port, where the console is served. */
  httpBase: string;
  tokens: { admin: string; machine: Record<string, string> };
  dataDir: string;
  tokensFile: string;
}

function secretFile(path: string, content: string): string {
  writeFileSync(path, content);
  chmodSync(path, 0o600);
  return path;
}

export async function startConsoleSite(machineIds: string[]): Promise<ConsoleSite> {
  const dir = tempDir('console-site-');
  const tokens = {
    admin: 'console-admin-token-0123456789abcdef',
    machine: Object.fromEntries(machineIds.map((id) => [id, `console-machine-token-${id}-0123456789`])),
  };
  const entries = [{ token: tokens.admin, admin: true }, ...machineIds.map((id) => ({ token: tokens.machine[id], machine_id: id }))];
  const tokensFile = secretFile(join(dir, 'tokens.json'), JSON.stringify({ tokens: entries }));
  const dataDir = join(dir, 'data');
  const cloud = await startCloud(dataDir, tokensFile, 0);
  const syncUrl = /<6>listening url=(\S+)/.exec(cloud.stderr())![1];
  return { cloud, syncUrl, httpBase: syncUrl.replace(/^ws/, 'http').replace(/\/v1\/sync$/, ''), tokens, dataDir, tokensFile };
}

/** Starts the real endpoint binary and waits for its `listening` line. */
export async function startCloud(dataDir: string, tokensFile: string, port: number): Promise<Spawned> {
  const cloud = spawnTracked(process.execPath, [CLOUD_BIN, '--port', String(port), '--data-dir', dataDir, '--tokens-file', tokensFile]);
  await waitFor(() => {
    if (cloud.proc.exitCode !== null) throw new Error(`taskhistory-cloud exited during start-up:\n${cloud.stderr()}`);
    return /<6>listening url=/.test(cloud.stderr());
  }, 15_000, 'taskhistory-cloud to listen');
  return cloud;
}

/** A real daemon as machine `machineId`, pushing every record to the site's endpoint, and a socket to it. */
export async function startPushingDaemon(site: ConsoleSite, machineId: string): Promise<{ daemon: Daemon; socket: RawSocket }> {
  const tokenFile = secretFile(join(tempDir('console-token-'), 'token'), `${site.tokens.machine[machineId]}\n`);
  const daemon = await startDaemon({
    args: ['--machine-id', machineId, '--cloud-url', site.syncUrl, '--cloud-token-file', tokenFile, '--cloud-retry-max-ms', '200'],
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
