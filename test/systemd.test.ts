import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { inheritedListenFd, notifySystemd, startWatchdog } from '../daemon/systemd.js';
import { sdNotify } from '../node/sd-notify.js';
import { ErrorCodes } from '../protocol/errors.js';
import { SYSTEM_DATA_DIR, SYSTEM_SOCKET_PATH } from '../protocol/paths.js';
import { CLI_BIN, CLOUD_BIN, DAEMON_BIN, REPO, openRawSocket, startDaemon } from './daemon-harness.js';
import { spawnTracked, tempDir, waitFor, type Spawned } from './processes.js';

const UNIT_DIR = join(REPO, 'systemd');

/** Runs a short-lived command to completion. */
function run(command: string, args: string[], env: NodeJS.ProcessEnv = process.env) {
  const result = spawnSync(command, args, { encoding: 'utf8', env });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr, output: `${result.stdout}${result.stderr}` };
}

function unitFilesIn(dir: string): string[] {
  return readdirSync(dir).filter((name) => /\.(service|socket)$/.test(name)).sort();
}

function installService(args: string[], env: NodeJS.ProcessEnv = process.env) {
  const result = run(process.execPath, [CLI_BIN, 'install-service', ...args], env);
  expect(result.status, result.output).toBe(0);
  return result;
}

interface Notification {
  /** The sender's pid, from the kernel's SCM_CREDENTIALS: what NotifyAccess=main checks. */
  pid: number;
  assignments: string[];
}

/**
 * A test-owned NOTIFY_SOCKET: a python3 AF_UNIX datagram socket with SO_PASSCRED, as systemd's,
 * printing each message and its sender's pid as JSON. An address starting with '@' is abstract.
 */
async function startNotifyReceiver(address?: string): Promise<{ path: string; notifications(): Notification[]; assignments(): string[] }> {
  const dir = tempDir('taskhistory-notify-');
  const path = address ?? join(dir, 'notify.sock');
  const script = join(dir, 'receive.py');
  writeFileSync(
    script,
    [
      'import json, socket, struct, sys',
      'server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)',
      'server.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)',
      "server.bind('\\0' + sys.argv[1][1:] if sys.argv[1].startswith('@') else sys.argv[1])",
      'print(json.dumps("bound"), flush=True)',
      'while True:',
      '    data, ancillary, _, _ = server.recvmsg(65536, socket.CMSG_SPACE(12))',
      '    pid = next(struct.unpack("3i", d)[0] for level, kind, d in ancillary if kind == socket.SCM_CREDENTIALS)',
      '    print(json.dumps({"pid": pid, "text": data.decode()}), flush=True)',
    ].join('\n'),
  );
  const receiver = spawnTracked('python3', [script, path]);
  await waitFor(() => receiver.stdout().includes('"bound"'), 10_000, 'the notify receiver to bind');
  const notifications = (): Notification[] =>
    receiver
      .stdout()
      .split('\n')
      .filter(Boolean)
      .slice(1)
      .map((line) => {
        const { pid, text } = JSON.parse(line) as { pid: number; text: string };
        return { pid, assignments: text.split('\n') };
      });
  return { path, notifications, assignments: () => notifications().flatMap((notification) => notification.assignments) };
}

interface ActivatedDaemon extends Spawned {
  socketPath: string;
  dataDir: string;
}

/** The arguments of the system unit's ExecStart, with the paths it names moved to `moved`. */
function systemUnitDaemonArgs(moved: Record<string, string>): string[] {
  const execStart = /^ExecStart=(.*)$/m.exec(readFileSync(join(UNIT_DIR, 'taskhistoryd.service'), 'utf8'))?.[1];
  expect(execStart).toBeDefined();
  return execStart!.trim().split(/\s+/).slice(1).map((arg) => moved[arg] ?? arg);
}

/**
 * The daemon as systemd starts it, with the system unit's arguments: systemd-socket-activate
 * binds the socket and passes it as fd 3, in an environment holding only what it is given.
 */
async function startSocketActivated(notifySocket: string): Promise<ActivatedDaemon> {
  const dir = tempDir('taskhistory-activated-');
  const socketPath = join(dir, 'taskhistoryd.sock');
  const dataDir = join(dir, 'data');
  const configFile = join(dir, 'config.json');
  writeFileSync(configFile, '{}'); // what tmpfiles.d/taskhistory.conf creates
  const args = systemUnitDaemonArgs({ [SYSTEM_SOCKET_PATH]: socketPath, [SYSTEM_DATA_DIR]: dataDir, '/etc/taskhistory/config.json': configFile });
  const child = spawnTracked('systemd-socket-activate', [
    '-l', socketPath,
    '-E', `PATH=${process.env.PATH}`,
    '-E', `NOTIFY_SOCKET=${notifySocket}`,
    process.execPath, DAEMON_BIN, ...args, '--machine-id', 'test-machine',
  ]);
  await waitFor(() => existsSync(socketPath), 10_000, `systemd-socket-activate to bind ${socketPath}`);
  return { ...child, socketPath, dataDir };
}

/** Connects to a socket-activated daemon; a failure carries the daemon's stderr, which says why. */
async function connectActivated(daemon: ActivatedDaemon) {
  try {
    return await openRawSocket(daemon.socketPath);
  } catch (error) {
    throw new Error(`cannot connect to ${daemon.socketPath} (${(error as Error).message}); daemon stderr:\n${daemon.stderr()}`);
  }
}

/** The daemon as its units start it: this Node, the heap flags of the script's #! line, the script. */
const DAEMON_LAUNCH = `${process.execPath} --max-semi-space-size=2 --heap-growing-percent=25 ${DAEMON_BIN}`;

describe('unit files', () => {
  it('install-service renders every shipped unit with the package node and scripts, and systemd-analyze verify accepts them', () => {
    const prefix = tempDir('taskhistory-units-');
    installService(['--prefix', prefix]);
    const systemDir = join(prefix, 'etc/systemd/system');
    expect(unitFilesIn(systemDir)).toEqual(unitFilesIn(UNIT_DIR));

    const daemonUnit = readFileSync(join(systemDir, 'taskhistoryd.service'), 'utf8');
    expect(daemonUnit).toContain(`ExecStart=${DAEMON_LAUNCH} `);
    expect(readFileSync(join(systemDir, 'taskhistory-cloud.service'), 'utf8')).toContain(`ExecStart=${process.execPath} ${CLOUD_BIN} `);

    const verify = run('systemd-analyze', ['verify', ...unitFilesIn(systemDir).map((unit) => join(systemDir, unit))]);
    // verify exits 0 even for unknown keys and bad values: any output at all is a finding.
    expect(verify.output).toBe('');
    expect(verify.status).toBe(0);
  });

  it('install-service --user renders the user pair, and systemd-analyze --user verify accepts it', () => {
    const prefix = tempDir('taskhistory-user-units-');
    const runtimeDir = tempDir('taskhistory-runtime-');
    installService(['--user', '--prefix', prefix], { ...process.env, XDG_CONFIG_HOME: '/config' });
    const userDir = join(prefix, 'config/systemd/user');
    expect(unitFilesIn(userDir)).toEqual(unitFilesIn(join(UNIT_DIR, 'user')));
    expect(readFileSync(join(userDir, 'taskhistoryd.service'), 'utf8')).toContain(`ExecStart=${DAEMON_LAUNCH} `);

    const verify = run('systemd-analyze', ['--user', 'verify', ...unitFilesIn(userDir).map((unit) => join(userDir, unit))], {
      ...process.env,
      XDG_RUNTIME_DIR: runtimeDir,
    });
    expect(verify.output).toBe('');
    expect(verify.status).toBe(0);
  });

  it('install-service --dry-run prints the units and commands and writes nothing', () => {
    const prefix = tempDir('taskhistory-dry-run-');
    const result = installService(['--dry-run', '--prefix', prefix]);
    expect(readdirSync(prefix)).toEqual([]);
    expect(result.stdout).toContain(`# ${join(prefix, 'etc/systemd/system/taskhistoryd.service')}`);
    expect(result.stdout).toContain(`ExecStart=${DAEMON_LAUNCH} `);
    expect(result.stdout).toContain('systemctl enable --now taskhistoryd.socket');
  });

  it.each(['taskhistoryd.service', 'taskhistory-cloud.service'])('%s has an exposure of 2.0 or lower', (unit) => {
    const result = run('systemd-analyze', ['security', '--offline=true', join(UNIT_DIR, unit)]);
    const score = /Overall exposure level for \S+: ([\d.]+)/.exec(result.stdout)?.[1];
    expect(score, result.output).toBeDefined();
    console.log(`systemd-analyze security --offline=true systemd/${unit}: exposure ${score}`);
    expect(Number(score)).toBeLessThanOrEqual(2.0);
  });

  it('the daemon units take notifications from the main process only and reload without /bin/kill', () => {
    for (const unit of ['taskhistoryd.service', 'user/taskhistoryd.service']) {
      const text = readFileSync(join(UNIT_DIR, unit), 'utf8');
      expect(text, unit).toMatch(/^Type=notify$/m);
      expect(text, unit).toMatch(/^NotifyAccess=main$/m);
      expect(text, unit).toMatch(/^ExecReload=\/bin\/sh -c 'kill -HUP \$MAINPID'$/m);
    }
    for (const unit of [...unitFilesIn(UNIT_DIR), ...unitFilesIn(join(UNIT_DIR, 'user')).map((name) => `user/${name}`)]) {
      expect(readFileSync(join(UNIT_DIR, unit), 'utf8'), unit).not.toMatch(/^Exec\w+=.*\/bin\/kill\b/m);
    }
  });

  it('the system daemon sees its peers as they are: real uids, other users\' /proc, and CAP_SYS_PTRACE as its only capability', () => {
    const text = readFileSync(join(UNIT_DIR, 'taskhistoryd.service'), 'utf8');
    expect(text).not.toMatch(/^PrivateUsers=(yes|true|1)$/m);
    expect(text).toMatch(/^ProtectProc=default$/m);
    expect(text).toMatch(/^CapabilityBoundingSet=CAP_SYS_PTRACE$/m);
    expect(text).toMatch(/^AmbientCapabilities=CAP_SYS_PTRACE$/m);
    // The capability reads /proc; the system calls that would let it attach to a process stay out.
    expect(text).toMatch(/^SystemCallFilter=~@privileged @debug process_vm_readv process_vm_writev$/m);
  });

  it.each(['taskhistoryd.service', 'taskhistory-cloud.service'])('%s allows @pkey, which Node 20 calls at start', (unit) => {
    expect(readFileSync(join(UNIT_DIR, unit), 'utf8')).toMatch(/^SystemCallFilter=@system-service @pkey$/m);
  });

  it('the sysusers.d and tmpfiles.d snippets create the user, the group and the config file', () => {
    const root = tempDir('taskhistory-root-');
    mkdirSync(join(root, 'etc'));
    const sysusers = run('systemd-sysusers', [`--root=${root}`, join(UNIT_DIR, 'sysusers.d/taskhistory.conf')]);
    expect(sysusers.status, sysusers.output).toBe(0);
    const user = readFileSync(join(root, 'etc/passwd'), 'utf8').split('\n').find((line) => line.startsWith('taskhistory:'));
    expect(user).toMatch(/^taskhistory:x:(\d+):\d+:[^:]*:\/var\/lib\/taskhistory:/);
    const gid = Number(user!.split(':')[3]);
    expect(readFileSync(join(root, 'etc/group'), 'utf8')).toContain(`taskhistory:x:${gid}:`);

    const tmpfiles = run('systemd-tmpfiles', ['--create', `--root=${root}`, join(UNIT_DIR, 'tmpfiles.d/taskhistory.conf')]);
    expect(tmpfiles.status, tmpfiles.output).toBe(0);
    const config = join(root, 'etc/taskhistory/config.json');
    expect(JSON.parse(readFileSync(config, 'utf8'))).toEqual({});
    expect(statSync(config).mode & 0o777).toBe(0o640);
    expect(statSync(config).gid).toBe(gid);
    expect(statSync(join(root, 'etc/taskhistory-cloud')).mode & 0o777).toBe(0o700);
  });
});

describe('daemon/systemd.ts', () => {
  const savedNotifySocket = process.env.NOTIFY_SOCKET;
  afterEach(() => {
    if (savedNotifySocket === undefined) delete process.env.NOTIFY_SOCKET;
    else process.env.NOTIFY_SOCKET = savedNotifySocket;
  });

  it('takes fd 3 only when LISTEN_PID names this process, and clears LISTEN_* either way', () => {
    const ours: NodeJS.ProcessEnv = { LISTEN_PID: String(process.pid), LISTEN_FDS: '1', LISTEN_FDNAMES: 'taskhistoryd.socket', KEEP: 'x' };
    expect(inheritedListenFd(ours)).toBe(3);
    expect(ours).toEqual({ KEEP: 'x' });

    const someoneElses: NodeJS.ProcessEnv = { LISTEN_PID: String(process.pid + 1), LISTEN_FDS: '1' };
    expect(inheritedListenFd(someoneElses)).toBeNull();
    expect(someoneElses).toEqual({});

    expect(inheritedListenFd({ LISTEN_PID: String(process.pid), LISTEN_FDS: '0' })).toBeNull();
    expect(inheritedListenFd({})).toBeNull();
  });

  it('notifySystemd sends its assignments to NOTIFY_SOCKET from this process itself (NotifyAccess=main)', async () => {
    const receiver = await startNotifyReceiver();
    process.env.NOTIFY_SOCKET = receiver.path;
    await notifySystemd('READY=1', 'STATUS=serving');
    const notification = await waitFor(() => receiver.notifications()[0], 10_000, 'a notification');
    expect(notification).toEqual({ pid: process.pid, assignments: ['READY=1', 'STATUS=serving'] });
  });

  it('sdNotify reaches an abstract NOTIFY_SOCKET (@name), as systemd sets it in containers', async () => {
    const receiver = await startNotifyReceiver(`@taskhistory-test-notify-${process.pid}`);
    expect(sdNotify(['STATUS=abstract'], receiver.path)).toBe(true);
    await waitFor(() => receiver.assignments().includes('STATUS=abstract'), 10_000, 'STATUS=abstract');
  });

  it('sdNotify does nothing without NOTIFY_SOCKET, refuses a multi-line assignment, and says why a send failed', () => {
    expect(sdNotify(['READY=1'], undefined)).toBe(false);
    expect(() => sdNotify(['STATUS=two\nREADY=1'], '/run/unused.sock')).toThrow(/not one VARIABLE=VALUE line/);
    const missing = join(tempDir('taskhistory-no-notify-'), 'absent.sock');
    expect(() => sdNotify(['READY=1'], missing)).toThrow(expect.objectContaining({ code: 'ENOENT', message: expect.stringContaining(missing) }));
    expect(() => sdNotify(['READY=1'], `/${'x'.repeat(200)}.sock`)).toThrow(/longer than 107 bytes/);
  });

  it('startWatchdog pings WATCHDOG=1 for this process only, until stopped', async () => {
    const receiver = await startNotifyReceiver();
    process.env.NOTIFY_SOCKET = receiver.path;
    expect(startWatchdog({})).toBeNull();
    expect(startWatchdog({ WATCHDOG_USEC: '100000', WATCHDOG_PID: String(process.pid + 1) })).toBeNull();
    const stop = startWatchdog({ WATCHDOG_USEC: '100000', WATCHDOG_PID: String(process.pid) });
    expect(stop).not.toBeNull();
    const pings = () => receiver.assignments().filter((assignment) => assignment === 'WATCHDOG=1').length;
    try {
      await waitFor(() => pings() >= 2, 10_000, 'two WATCHDOG=1 pings');
    } finally {
      stop!();
    }
  });
});

describe('the daemon under socket activation', () => {
  it('serves clients on the passed socket and tells NOTIFY_SOCKET READY=1, then STOPPING=1 on SIGTERM', async () => {
    const receiver = await startNotifyReceiver();
    const daemon = await startSocketActivated(receiver.path);
    const boundInode = statSync(daemon.socketPath).ino;

    // The first connection makes systemd-socket-activate exec the daemon, which must accept it.
    const client = await connectActivated(daemon);
    const { task_id } = await client.call('create_task', { description: 'socket activated', mode: 'autonomous', steps: [] });
    await client.call('log_step', { task_id, step_num: 1, command: 'true', status: 'success' });
    expect((await client.call('get_task', { task_id })).steps).toHaveLength(1);
    const ready = await waitFor(() => receiver.notifications().find((sent) => sent.assignments.includes('READY=1')), 10_000, 'READY=1');
    // Sent by the daemon's own pid (systemd-socket-activate execs it), as NotifyAccess=main requires.
    expect(ready.pid).toBe(daemon.pid);
    // Still the socket systemd-socket-activate bound: the daemon did not bind its own.
    expect(statSync(daemon.socketPath).ino).toBe(boundInode);
    client.close();

    process.kill(daemon.pid, 'SIGTERM');
    expect(await daemon.exited).toEqual({ code: 0, signal: null });
    const stopping = await waitFor(() => receiver.notifications().find((sent) => sent.assignments.includes('STOPPING=1')), 10_000, 'STOPPING=1');
    expect(stopping.pid).toBe(daemon.pid);
    // The socket file is systemd's: the daemon leaves it for the next activation.
    expect(statSync(daemon.socketPath).ino).toBe(boundInode);
  });

  it('loses no acknowledged step when SIGTERM arrives during a burst of writes, and exits 0', async () => {
    const receiver = await startNotifyReceiver();
    const daemon = await startSocketActivated(receiver.path);
    const setup = await connectActivated(daemon);
    const taskIds: string[] = [];
    for (let i = 0; i < 6; i++) {
      taskIds.push((await setup.call('create_task', { description: `burst writer ${i}`, mode: 'autonomous', steps: [] })).task_id);
    }
    const acknowledged = new Map<string, number[]>(taskIds.map((id) => [id, []]));
    const refusals: number[] = [];
    const ackedCount = () => [...acknowledged.values()].reduce((sum, seqs) => sum + seqs.length, 0);

    const writers = taskIds.map(async (task_id) => {
      const connection = await connectActivated(daemon);
      for (let step_num = 1; ; step_num++) {
        let response;
        try {
          response = await connection.request('log_step', { task_id, step_num, command: `step ${step_num}`, status: 'success', output: 'x'.repeat(512) });
        } catch {
          return; // the connection closed without an answer: not acknowledged
        }
        if (response.error) {
          refusals.push(response.error.code);
          return;
        }
        acknowledged.get(task_id)!.push(response.result.seq);
      }
    });

    await waitFor(() => ackedCount() >= 300, 30_000, '300 acknowledged steps');
    process.kill(daemon.pid, 'SIGTERM');
    expect(await daemon.exited).toEqual({ code: 0, signal: null });
    await Promise.all(writers);
    for (const code of refusals) expect(code).toBe(ErrorCodes.ShuttingDown);

    const restarted = await startDaemon({ dataDir: daemon.dataDir });
    const reader = await openRawSocket(restarted.socketPath);
    for (const [task_id, seqs] of acknowledged) {
      const stored = new Set((await reader.call('get_task', { task_id })).steps.map((step: { seq: number }) => step.seq));
      const lost = seqs.filter((seq) => !stored.has(seq));
      expect(lost, `acknowledged steps of ${task_id} missing after restart`).toEqual([]);
    }
    reader.close();
    expect(await restarted.stop()).toEqual({ code: 0, signal: null });
  });
});
