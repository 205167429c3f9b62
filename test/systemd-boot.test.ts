import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SYSTEM_SOCKET_PATH } from '../protocol/paths.js';
import { REPO } from './daemon-harness.js';
import { waitFor } from './processes.js';
import { minimalDebianRoot, missingTools, NODE_INSIDE, PACKAGE_INSIDE, SystemdContainer, whyNoContainers } from './systemd-container.js';

/**
 * The shipped units under a real systemd (PID 1 of a container booted from a minimal Debian):
 * installed by `taskhistory install-service`, activated by the socket, driven by systemctl.
 */

const cannotRun = whyNoContainers();
if (cannotRun) console.log(`skipping the real-systemd tests: ${cannotRun}`);

const DAEMON = 'taskhistoryd.service';
const CLOUD = 'taskhistory-cloud.service';
const NODE = NODE_INSIDE;
const CLI_BIN = join(PACKAGE_INSIDE, 'dist/bin/taskhistory.js');
const GROUP_MEMBERS = ['alice', 'bob'];
/** CAP_SYS_PTRACE (bit 19) alone, as /proc/PID/status prints capability sets. */
const PTRACE_ONLY = '0000000000080000';
const STRICT_DROP_IN = '/etc/systemd/system/taskhistoryd.service.d/strict-seccomp.conf';

describe.skipIf(cannotRun !== null)('the units under a real systemd', () => {
  let container: SystemdContainer;

  /** The CLI inside the container, as root or as `user` (on the system socket either way). */
  const cli = (args: string[], user?: string) =>
    container.check([NODE, CLI_BIN, ...(user ? ['--socket', SYSTEM_SOCKET_PATH] : []), ...args], { user }).trim();
  const daemonState = () => container.unitProperties(DAEMON, ['ActiveState', 'SubState', 'MainPID', 'Result', 'ExecMainStatus', 'StatusText']);
  const waitForActive = (unit: string) =>
    waitFor(() => container.unitProperties(unit, ['ActiveState', 'SubState', 'MainPID']).SubState === 'running', 60_000, `${unit} to be running`);
  const verifiedRecords = () => Number(/ok: (\d+) records verified/.exec(cli(['verify']))?.[1]);
  const exportedTasks = () => (JSON.parse(cli(['--json', 'export'])) as { tasks: { task_id: string; steps: unknown[]; status: string }[] }).tasks;

  beforeAll(async () => {
    const missing = missingTools();
    if (missing.length) throw new Error(`missing ${missing.join(', ')}: apt-get install systemd-container debootstrap (.ci/run does)`);
    container = await SystemdContainer.boot(await minimalDebianRoot(), REPO);
  }, 20 * 60_000);

  afterAll(async () => {
    await container?.stop();
  }, 60_000);

  it('install-service installs the units; enable --now listens on the socket without starting the daemon', () => {
    container.check([NODE, CLI_BIN, 'install-service']);
    container.check(['systemctl', 'daemon-reload']);
    container.check(['systemctl', 'enable', '--now', 'taskhistoryd.socket']);
    expect(container.unitProperties('taskhistoryd.socket', ['ActiveState', 'SubState'])).toEqual({ ActiveState: 'active', SubState: 'listening' });
    expect(daemonState()).toMatchObject({ ActiveState: 'inactive', MainPID: '0' });
  });

  it('the first connection starts the daemon, whose own READY=1 systemd accepts (NotifyAccess=main)', async () => {
    const taskId = cli(['create', '--description', 'logged as root', '--mode', 'autonomous']);
    expect(taskId).toMatch(/^task_/);
    await waitForActive(DAEMON);
    const state = daemonState();
    expect(state).toMatchObject({ ActiveState: 'active', SubState: 'running' });
    // STATUS= is another notification only the main process may send.
    expect(state.StatusText).toMatch(/^serving \d+ tasks, last seq \d+$/);
    expect(container.unitProperties(DAEMON, ['NotifyAccess', 'Type'])).toEqual({ NotifyAccess: 'main', Type: 'notify' });
  });

  it('takes records from root and from two members of the socket group, and refuses a user outside it', () => {
    for (const user of GROUP_MEMBERS) container.check(['useradd', '--create-home', '--groups', 'taskhistory', user]);
    container.check(['useradd', '--create-home', 'mallory']);
    for (const user of GROUP_MEMBERS) {
      const taskId = cli(['create', '--description', `logged as ${user}`, '--mode', 'autonomous'], user);
      cli(['step', taskId, '--num', '1', '--command', `whoami # ${user}`, '--status', 'success', '--output', user], user);
      cli(['complete', taskId, '--status', 'completed'], user);
    }
    const refused = container.exec([NODE, CLI_BIN, '--socket', SYSTEM_SOCKET_PATH, 'status'], { user: 'mallory' });
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toContain('EACCES');

    const tasks = exportedTasks();
    expect(tasks.map((task) => (task as unknown as { description: string }).description)).toEqual(['logged as root', 'logged as alice', 'logged as bob']);
    expect(tasks.slice(1).map((task) => [task.steps.length, task.status])).toEqual([
      [1, 'completed'],
      [1, 'completed'],
    ]);
    expect(verifiedRecords()).toBe(7);
  });

  it("names each record's writer from the kernel through the socket systemd passed, and shows each member only its own tasks", () => {
    const idOf = (user: string, flag: '-u' | '-g') => Number(container.check(['id', flag, user]).trim());
    const [rootTask, aliceTask, bobTask] = exportedTasks().map((task) => task.task_id);
    const shown = (taskId: string, user?: string) => JSON.parse(cli(['--json', 'show', taskId], user)) as { writer: { uid: number; comm: string; exe: string }; steps: { writer: { uid: number } }[] };
    expect(shown(rootTask).writer).toMatchObject({ uid: 0, comm: 'node', exe: NODE });
    for (const [user, taskId] of [['alice', aliceTask], ['bob', bobTask]] as const) {
      const task = shown(taskId, user);
      expect(task.writer).toMatchObject({ uid: idOf(user, '-u'), gid: idOf(user, '-g'), comm: 'node', exe: NODE });
      expect(task.steps[0].writer.uid).toBe(idOf(user, '-u'));
      // Each member sees its own task only; another's answers as a missing one.
      const exported = JSON.parse(cli(['--json', 'export'], user)) as { tasks: { task_id: string }[] };
      expect(exported.tasks.map((own) => own.task_id)).toEqual([taskId]);
      const other = container.exec([NODE, CLI_BIN, '--socket', SYSTEM_SOCKET_PATH, 'show', taskId === aliceTask ? bobTask : aliceTask], { user });
      expect(other.status).not.toBe(0);
      expect(other.output).toContain('no task');
      expect(JSON.parse(cli(['--json', 'status'], user)).caller).toEqual({ uid: idOf(user, '-u'), sees: 'own', tasks: 1, running_tasks: 0 });
    }
  });

  it('runs the daemon with real uids, other users\' /proc visible, CAP_SYS_PTRACE only, NoNewPrivs and a seccomp filter', () => {
    const pid = daemonState().MainPID;
    const status = container.check(['cat', `/proc/${pid}/status`]);
    const lines = status.split('\n').filter((line) => /^(Uid|Seccomp|NoNewPrivs|Cap\w+):/.test(line));
    console.log(`/proc/${pid}/status of ${DAEMON} under systemd:\n  ${lines.join('\n  ')}`);
    const field = (name: string) => new RegExp(`^${name}:\\s*(.+)$`, 'm').exec(status)?.[1].trim();
    expect(field('Seccomp')).toBe('2');
    expect(field('NoNewPrivs')).toBe('1');
    for (const set of ['CapPrm', 'CapEff', 'CapBnd', 'CapAmb']) expect(field(set), set).toBe(PTRACE_ONLY);
    expect(field('Uid')?.split(/\s+/)[0]).not.toBe('0');
    // No user namespace: a peer's uid from SO_PEERCRED is its real uid, not 65534.
    expect(container.check(['cat', `/proc/${pid}/uid_map`]).trim().split(/\s+/)).toEqual(['0', '0', '4294967295']);
    // The service's own /proc: pids only (ProcSubset=pid), but no hidepid (ProtectProc=default).
    const procMount = container
      .check(['nsenter', '-t', pid, '-m', 'cat', '/proc/self/mountinfo'])
      .split('\n')
      .find((line) => line.split(' ')[4] === '/proc');
    expect(procMount).toContain('subset=pid');
    expect(procMount).not.toMatch(/hidepid/);
  });

  it('systemctl reload makes the running daemon apply the config file (no /bin/kill on this system)', async () => {
    expect(container.exec(['test', '-e', '/bin/kill']).status).not.toBe(0);
    const pid = daemonState().MainPID;
    container.check(['sh', '-c', `printf '%s' '{"redaction_rules": [{"name": "corp-key", "pattern": "CORP-[0-9]{8}"}]}' > /etc/taskhistory/config.json`]);
    container.check(['systemctl', 'reload', DAEMON]);
    await waitFor(() => cli(['redaction-rules']).includes('corp-key'), 30_000, 'the reloaded rule');
    expect(daemonState()).toMatchObject({ MainPID: pid, SubState: 'running' });
    const rootTask = exportedTasks()[0].task_id;
    cli(['step', rootTask, '--num', '1', '--command', 'deploy', '--status', 'success', '--output', 'key CORP-12345678 used']);
    const stored = JSON.stringify(JSON.parse(cli(['--json', 'show', rootTask])));
    expect(stored).not.toContain('CORP-12345678');
  });

  it('systemctl restart replaces the process and keeps every record', async () => {
    const before = { pid: daemonState().MainPID, records: verifiedRecords(), tasks: exportedTasks() };
    container.check(['systemctl', 'restart', DAEMON]);
    await waitForActive(DAEMON);
    expect(daemonState().MainPID).not.toBe(before.pid);
    expect(verifiedRecords()).toBe(before.records);
    expect(exportedTasks()).toEqual(before.tasks);
  });

  it('systemctl stop ends the daemon cleanly (exit 0) and leaves the socket listening', async () => {
    container.check(['systemctl', 'stop', DAEMON]);
    await waitFor(() => daemonState().ActiveState === 'inactive', 60_000, `${DAEMON} to stop`);
    expect(daemonState()).toMatchObject({ Result: 'success', ExecMainStatus: '0', MainPID: '0' });
    expect(container.check(['journalctl', '--no-pager', '-u', DAEMON])).toContain('stopped last_seq=');
    expect(container.unitProperties('taskhistoryd.socket', ['SubState'])).toEqual({ SubState: 'listening' });
  });

  it("the system-call filter covers what Node calls: with SIGSYS instead of EPERM the daemon still serves, reloads and stops; without @pkey node dies", async () => {
    const strictRun = (filter: string) =>
      container.exec(['systemd-run', '--wait', '--quiet', `--property=SystemCallFilter=${filter}`, '--property=SystemCallErrorNumber=kill', NODE, '-e', '0']);
    expect(strictRun('@system-service @pkey').status).toBe(0);
    const withoutPkey = strictRun('@system-service');
    expect(withoutPkey.status, withoutPkey.output).not.toBe(0);

    container.check(['mkdir', '-p', STRICT_DROP_IN.slice(0, STRICT_DROP_IN.lastIndexOf('/'))]);
    container.check(['sh', '-c', `printf '[Service]\\nSystemCallErrorNumber=kill\\n' > ${STRICT_DROP_IN}`]);
    container.check(['systemctl', 'daemon-reload']);
    try {
      const records = verifiedRecords(); // activates the daemon under the strict filter
      await waitForActive(DAEMON);
      const taskId = cli(['create', '--description', 'under a killing filter', '--mode', 'autonomous'], 'alice');
      cli(['step', taskId, '--num', '1', '--command', 'true', '--status', 'success'], 'alice');
      container.check(['systemctl', 'reload', DAEMON]);
      expect(verifiedRecords()).toBe(records + 2);
      container.check(['systemctl', 'stop', DAEMON]);
      await waitFor(() => daemonState().ActiveState === 'inactive', 60_000, `${DAEMON} to stop`);
      expect(daemonState()).toMatchObject({ Result: 'success', ExecMainStatus: '0' });
    } finally {
      container.check(['rm', STRICT_DROP_IN]);
      container.check(['systemctl', 'daemon-reload']);
    }
  });

  it('the cloud unit starts on its own, with its tokens handed over by LoadCredential=, and stops cleanly', async () => {
    container.check(['sh', '-c', `umask 077 && printf '%s' '{"tokens": [{"token": "container-test-token-0001", "machine_id": "m1"}]}' > /etc/taskhistory-cloud/tokens.json`]);
    container.check(['systemctl', 'start', CLOUD]);
    await waitForActive(CLOUD);
    await waitFor(() => container.check(['journalctl', '--no-pager', '-u', CLOUD]).includes('listening url=ws://127.0.0.1:8740/v1/sync'), 60_000, 'the endpoint to listen');
    const probe = "require('node:net').connect(8740, '127.0.0.1').on('connect', () => process.exit(0)).on('error', () => process.exit(1))";
    expect(container.exec([NODE, '-e', probe]).status).toBe(0);
    expect(daemonState().ActiveState).toBe('inactive');
    container.check(['systemctl', 'stop', CLOUD]);
    await waitFor(() => container.unitProperties(CLOUD, ['ActiveState']).ActiveState === 'inactive', 60_000, `${CLOUD} to stop`);
    expect(container.unitProperties(CLOUD, ['Result'])).toEqual({ Result: 'success' });
  });
});
