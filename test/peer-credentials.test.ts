import { chmodSync, closeSync, openSync, realpathSync } from 'node:fs';
import { createServer, Socket, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadNativeAddon, NATIVE_ADDON_FILE, nativeAddon, NativeAddonUnavailable } from '../node/native.js';
import { peerCredentialsOf, processIdentity, socketDescriptor } from '../node/peer-credentials.js';
import { REPO } from './daemon-harness.js';
import { spawnTracked, tempDir, waitFor, type Spawned } from './processes.js';

/** Uids with no passwd entry are fine: the kernel records numbers. 65534 is nobody. */
const OTHER_USERS = [
  { uid: 65534, gid: 65534 },
  { uid: 40123, gid: 40200 },
];
const NODE_EXE = realpathSync(process.execPath);

/** A Unix socket server in this process that anyone may connect to; hands out each accepted socket. */
async function startServer(): Promise<{ path: string; server: Server; accepted(): Promise<Socket> }> {
  const dir = tempDir('taskhistory-peer-');
  chmodSync(dir, 0o755);
  const path = join(dir, 'peer.sock');
  const waiting: ((socket: Socket) => void)[] = [];
  const server = createServer((socket) => waiting.shift()?.(socket));
  await new Promise<void>((resolve) => server.listen(path, resolve));
  chmodSync(path, 0o777);
  return { path, server, accepted: () => new Promise((resolve) => waiting.push(resolve)) };
}

/** A node client, under the given uid/gid, that connects, names its comm `title`, and waits to be killed. */
function connectAs(path: string, options: { uid?: number; gid?: number; title?: string }): Spawned {
  const script = `process.title = ${JSON.stringify(options.title ?? 'node')};
require('node:net').connect(${JSON.stringify(path)}, () => console.log('connected'));`;
  return spawnTracked(process.execPath, ['-e', script], { uid: options.uid, gid: options.gid, cwd: '/' });
}

const servers: Server[] = [];
afterAll(() => {
  for (const server of servers) server.close();
});

describe('peer credentials (SO_PEERCRED through the native addon)', () => {
  it('reports the uid, gid and pid of processes of other users, and /proc their comm and exe', async () => {
    const { path, server, accepted } = await startServer();
    servers.push(server);
    for (const user of OTHER_USERS) {
      const next = accepted();
      const client = connectAs(path, { ...user, title: 'agent-client' });
      const socket = await next;
      await waitFor(() => client.stdout().includes('connected'), 10_000, `uid ${user.uid} to connect`);
      expect(peerCredentialsOf(socket)).toEqual({ uid: user.uid, gid: user.gid, pid: client.pid });
      // This process is root, so it may read another uid's exe; the daemon's unit grants that explicitly.
      expect(processIdentity(client.pid)).toEqual({ comm: 'agent-client', exe: NODE_EXE });
      socket.destroy();
      process.kill(client.pid, 'SIGKILL');
      await client.exited;
    }
  });

  it('shows that comm is whatever the peer says while exe is the binary it runs', async () => {
    const { path, server, accepted } = await startServer();
    servers.push(server);
    const next = accepted();
    const client = connectAs(path, { title: 'systemd-journald-forged' });
    const socket = await next;
    const { pid } = peerCredentialsOf(socket);
    // The kernel keeps 15 bytes of a task name.
    await waitFor(() => processIdentity(pid).comm === 'systemd-journal', 10_000, 'the forged comm');
    expect(processIdentity(pid).exe).toBe(NODE_EXE);
    socket.destroy();
    process.kill(client.pid, 'SIGKILL');
    await client.exited;
  });

  it('gives null comm and exe for a process that is gone', async () => {
    const gone = spawnTracked(process.execPath, ['-e', '']);
    await gone.exited;
    expect(processIdentity(gone.pid)).toEqual({ comm: null, exe: null });
    expect(() => processIdentity(0)).toThrow(RangeError);
  });

  it('a process of another uid without CAP_SYS_PTRACE reads the comm of root processes but not their exe', async () => {
    const module = join(REPO, 'dist/node/peer-credentials.js');
    const reader = spawnTracked(
      process.execPath,
      ['--input-type=module', '-e', `const { processIdentity } = await import(${JSON.stringify(module)}); console.log(JSON.stringify(processIdentity(${process.pid})));`],
      { uid: 65534, gid: 65534, cwd: '/' },
    );
    expect(await reader.exited, reader.stderr()).toEqual({ code: 0, signal: null });
    expect(JSON.parse(reader.stdout())).toEqual({ comm: expect.any(String), exe: null });
  });

  it('answers ENOTSOCK for a descriptor that is not a socket, and refuses a socket without a descriptor', () => {
    const fd = openSync(process.execPath, 'r');
    try {
      expect(() => nativeAddon().peerCredentials(fd)).toThrow(expect.objectContaining({ code: 'ENOTSOCK', syscall: 'getsockopt(SO_PEERCRED)' }));
    } finally {
      closeSync(fd);
    }
    expect(() => socketDescriptor(new Socket())).toThrow(/no file descriptor/);
  });
});

describe('the native addon loader', () => {
  it('loads the addon that npm install built', () => {
    expect(typeof loadNativeAddon(NATIVE_ADDON_FILE).peerCredentials).toBe('function');
  });

  it('names the file and the fix when an addon cannot be loaded', () => {
    const missing = join(tempDir('taskhistory-no-addon-'), 'taskhistory_native.node');
    let error: unknown;
    try {
      loadNativeAddon(missing);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(NativeAddonUnavailable);
    expect((error as Error).message).toContain(missing);
    expect((error as Error).message).toContain(`"npm rebuild" in ${REPO}`);
  });
});
