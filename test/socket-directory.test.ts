import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli, REPO, startDaemon } from './daemon-harness.js';
import { spawnTracked, tempDir } from './processes.js';

/** The socket's directory decides who can stand in for the daemon: untrusted ones are refused on both sides. */

const NOBODY = 65534;

/** A directory for sockets, created by another uid (`nobody`), as an attacker would before the victim's first start. */
function directoryOfNobody(): string {
  const dir = join(tempDir('untrusted-'), 'taskhistory-0');
  mkdirSync(dir, { mode: 0o700 });
  chownSync(dir, NOBODY, NOBODY);
  return dir;
}

async function refusedStart(socketPath: string, args: string[] = []): Promise<string> {
  const daemon = await startDaemon({ socketPath, args, noWait: true });
  expect(await daemon.exited).toEqual({ code: 1, signal: null });
  return daemon.stderr();
}

describe('the daemon refuses an untrusted socket directory, naming it and the fix', () => {
  it('created by another uid', async () => {
    const dir = directoryOfNobody();
    const stderr = await refusedStart(join(dir, 'taskhistoryd.sock'));
    expect(stderr).toContain(`the socket directory ${dir} is owned by uid ${NOBODY}, not by this daemon's uid 0`);
    expect(stderr).toContain(`rm -r ${dir}`);
    expect(existsSync(join(dir, 'taskhistoryd.sock'))).toBe(false);
  });

  it('writable by others (mode 0777)', async () => {
    const dir = join(tempDir('open-'), 'run');
    mkdirSync(dir);
    chmodSync(dir, 0o777);
    const stderr = await refusedStart(join(dir, 'taskhistoryd.sock'));
    expect(stderr).toContain(`the socket directory ${dir} has mode 0777`);
    expect(stderr).toContain(`chmod go-w ${dir}`);
  });

  it('a symlink, even to a directory of our own', async () => {
    const base = tempDir('link-');
    mkdirSync(join(base, 'real'), { mode: 0o700 });
    symlinkSync(join(base, 'real'), join(base, 'run'));
    const stderr = await refusedStart(join(base, 'run', 'taskhistoryd.sock'));
    expect(stderr).toContain(`the socket directory ${join(base, 'run')} is a symbolic link`);
  });

  it('with --socket-group, a directory not exactly 0750 with that group', async () => {
    const group = spawnSync('getent', ['group', 'nogroup'], { encoding: 'utf8' }).stdout.split(':')[0];
    const dir = join(tempDir('group-'), 'run');
    mkdirSync(dir, { mode: 0o700 });
    const stderr = await refusedStart(join(dir, 'taskhistoryd.sock'), ['--socket-group', group]);
    expect(stderr).toContain(`it must be exactly 0750 with group ${group}`);
    expect(stderr).toContain(`chmod 0750 ${dir} && chgrp ${group} ${dir}`);
  });

  it('the symlink race is closed: another user swapping a symlink in for the socket all through 3 starts never changes the target', async () => {
    const victim = join(tempDir('victim-'), 'id_rsa');
    writeFileSync(victim, 'secret');
    chmodSync(victim, 0o600);
    const dir = join(tempDir('race-'), 'run');
    mkdirSync(dir);
    chmodSync(dir, 0o777); // the attacker's way in: a directory anyone may write
    const socketPath = join(dir, 'taskhistoryd.sock');
    const attacker = spawnTracked('sh', ['-c', `while :; do ln -sfn ${victim} ${socketPath} 2>/dev/null; done`], { uid: NOBODY, gid: NOBODY });
    try {
      for (let start = 0; start < 3; start++) {
        const stderr = await refusedStart(socketPath, ['--socket-group', 'nogroup']);
        expect(stderr).toContain(`the socket directory ${dir} has mode 0777`);
      }
    } finally {
      process.kill(attacker.pid, 'SIGKILL');
    }
    const after = statSync(victim);
    expect([after.mode & 0o777, after.uid, after.gid]).toEqual([0o600, 0, 0]);
  });
});

describe('clients check the socket directory before sending anything', () => {
  /** An impostor listening where a daemon should be, counting the bytes it is sent. */
  async function impostor(dir: string): Promise<{ server: Server; socketPath: string; received: () => number }> {
    const socketPath = join(dir, 'taskhistoryd.sock');
    let bytes = 0;
    const server = createServer((socket) => socket.on('data', (chunk) => (bytes += chunk.length)));
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
    return { server, socketPath, received: () => bytes };
  }

  it('the CLI (through the SDK) refuses a socket in a directory owned by another uid and sends nothing', async () => {
    const dir = directoryOfNobody();
    const fake = await impostor(dir);
    const run = await runCli(['status', '--socket', fake.socketPath]);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain(`its directory ${dir} is owned by uid ${NOBODY}, neither root nor you (uid 0)`);
    expect(fake.received()).toBe(0);
    fake.server.close();
  });

  it('the Python client refuses it too, raising UntrustedSocketDirectoryError before connecting', async () => {
    const dir = directoryOfNobody();
    const fake = await impostor(dir);
    const script = [
      'import sys',
      `sys.path.insert(0, ${JSON.stringify(join(REPO, 'client/python'))})`,
      'import taskhistory',
      'try:',
      '    taskhistory.TaskHistory(socket_path=sys.argv[1]).status()',
      'except taskhistory.UntrustedSocketDirectoryError as error:',
      '    print("refused:", error)',
    ].join('\n');
    const result = spawnSync('python3', ['-c', script, fake.socketPath], { encoding: 'utf8' });
    expect(result.stdout).toContain(`refused: not connecting to ${fake.socketPath}: its directory ${dir} is owned by uid ${NOBODY}`);
    expect(fake.received()).toBe(0);
    fake.server.close();
  });

  it("a directory owned by the caller or root is trusted: the CLI talks to a real daemon", async () => {
    const daemon = await startDaemon();
    const run = await runCli(['status', '--socket', daemon.socketPath]);
    expect(run.code).toBe(0);
    await daemon.stop();
  });
});
