import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, readFileSync, realpathSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EventParams, StatusResult } from '../protocol/methods.js';
import { ChainWalker } from '../protocol/chain-verify.js';
import { GENESIS_HASH, type ChainRecord, type Writer } from '../protocol/records.js';
import { sha256Hex } from '../node/sha256.js';
import type { TaskView } from '../protocol/task-view.js';
import { CLI_BIN, DAEMON_BIN, environmentWithoutSettings, openRawSocket, REPO, startDaemon, type Daemon, type RawSocket } from './daemon-harness.js';
import { fileBackend, httpGet, openCloudSocket, startCloud, writeTokensFile } from './cloud-harness.js';
import { spawnTracked, tempDir, waitFor } from './processes.js';

/**
 * Who wrote what, and who sees what, on a socket shared by a group: real users (created here when
 * missing) run real clients through runuser against a root daemon with --socket-group and
 * --admin-group. Every record names the kernel's uid, gid and pid of its writer and the comm and
 * exe /proc gave; each user sees and writes only its own tasks; root and the admin group see all.
 */

const SOCKET_GROUP = 'thw-socket';
const ADMIN_GROUP = 'thw-admins';
const USERS = { alice: 'thw-alice', bob: 'thw-bob', admin: 'thw-admin' } as const;
type Role = keyof typeof USERS | 'root';
const NODE_EXE = realpathSync(process.execPath);

const getent = (database: string, key: string) => spawnSync('getent', [database, key]).status === 0;
function run(command: string, args: string[]): void {
  const result = spawnSync(command, args, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed: ${result.stderr}`);
}

/** Creates the groups and users this file needs when missing; returns what it created, to remove at the end. */
function ensureAccounts(): { users: string[]; groups: string[] } {
  const created = { users: [] as string[], groups: [] as string[] };
  for (const group of [SOCKET_GROUP, ADMIN_GROUP]) {
    if (getent('group', group)) continue;
    run('groupadd', [group]);
    created.groups.push(group);
  }
  for (const [role, user] of Object.entries(USERS)) {
    if (getent('passwd', user)) continue;
    const groups = role === 'admin' ? `${SOCKET_GROUP},${ADMIN_GROUP}` : SOCKET_GROUP;
    run('useradd', ['--no-create-home', '--user-group', '--shell', '/usr/sbin/nologin', '--groups', groups, user]);
    created.users.push(user);
  }
  return created;
}

function idOf(user: string, flag: '-u' | '-g'): number {
  return Number(spawnSync('id', [flag, user], { encoding: 'utf8' }).stdout.trim());
}

/**
 * A newline-JSON client run as a user: names its comm (process.title), then either sends each
 * request in turn and prints `{pid, answers}`, or subscribes and prints every event until it sees
 * the task_created record of the description it was told to stop at.
 */
const CLIENT_SCRIPT = `
const { connect } = require('node:net');
const [socketPath, title, mode, payload] = process.argv.slice(2);
process.title = title;
setTimeout(() => process.exit(3), 30000).unref();
const socket = connect(socketPath);
socket.setEncoding('utf8');
let buffered = '';
const waiting = new Map();
let onEvent = () => {};
socket.on('data', (chunk) => {
  buffered += chunk;
  for (let end; (end = buffered.indexOf('\\n')) >= 0; ) {
    const message = JSON.parse(buffered.slice(0, end));
    buffered = buffered.slice(end + 1);
    if (message.method === 'event') onEvent(message.params);
    else waiting.get(message.id)?.(message);
  }
});
const call = (id, method, params) => new Promise((resolve) => {
  waiting.set(id, resolve);
  socket.write(JSON.stringify({ jsonrpc: '2.0', id, method, params }) + '\\n');
});
socket.on('connect', async () => {
  if (mode === 'calls') {
    const answers = [];
    for (const [index, [method, params]] of JSON.parse(payload).entries()) answers.push(await call(index + 1, method, params));
    process.stdout.write(JSON.stringify({ pid: process.pid, answers }) + '\\n');
    process.exit(0);
  }
  const { stopAt, params } = JSON.parse(payload);
  onEvent = (event) => {
    process.stdout.write(JSON.stringify(event) + '\\n');
    if (event.type === 'task_created' && event.record.description === stopAt) process.exit(0);
  };
  const answer = await call(1, 'subscribe', params);
  process.stdout.write(JSON.stringify({ subscribed: answer }) + '\\n');
});
`;

interface Answer {
  result?: any;
  error?: { code: number; message: string; data?: unknown };
}

describe('writers and per-user views on a shared socket', () => {
  let created: { users: string[]; groups: string[] };
  let daemon: Daemon;
  let root: RawSocket;
  /** Root's subscription to every record, on a socket of its own (its reader takes every message). */
  let recorder: RawSocket;
  let scriptFile: string;
  let socketPath: string;
  /** Every committed record, as root's subscription saw it. */
  const records: ChainRecord[] = [];
  const account = {} as Record<Role, { uid: number; gid: number }>;

  beforeAll(async () => {
    created = ensureAccounts();
    for (const [role, user] of Object.entries(USERS)) account[role as Role] = { uid: idOf(user, '-u'), gid: idOf(user, '-g') };
    account.root = { uid: 0, gid: 0 };
    const dir = tempDir('taskhistory-writers-');
    chmodSync(dir, 0o755);
    scriptFile = join(dir, 'client.cjs');
    writeFileSync(scriptFile, CLIENT_SCRIPT, { mode: 0o644 });
    socketPath = join(dir, 'run', 'taskhistoryd.sock');
    daemon = await startDaemon({ socketPath, args: ['--socket-group', SOCKET_GROUP, '--admin-group', ADMIN_GROUP, '--checkpoint-idle-ms', '100'] });
    root = await openRawSocket(socketPath);
    recorder = await openRawSocket(socketPath);
    await recorder.call('subscribe', {});
    void (async () => {
      for (;;) {
        const message = await recorder.next(120_000).catch(() => null);
        if (message === null) return;
        if (message.method === 'event') records.push((message.params as EventParams).record);
      }
    })();
  }, 60_000);

  afterAll(async () => {
    root?.close();
    recorder?.close();
    await daemon?.stop();
    for (const user of created?.users ?? []) spawnSync('userdel', [user]);
    for (const group of created?.groups ?? []) spawnSync('groupdel', [group]);
  });

  /** A client process as `role` (root: this process's uid), with the given comm. */
  function client(role: Role, title: string, mode: 'calls' | 'subscribe', payload: unknown) {
    const args = [scriptFile, socketPath, title, mode, JSON.stringify(payload)];
    const env = environmentWithoutSettings();
    return role === 'root'
      ? spawnTracked(process.execPath, args, { env, cwd: '/' })
      : spawnTracked('runuser', ['-u', USERS[role], '--', process.execPath, ...args], { env, cwd: '/' });
  }

  async function calls(role: Role, requests: [string, unknown][], title = `agent-${role}`): Promise<{ pid: number; answers: Answer[] }> {
    const child = client(role, title, 'calls', requests);
    expect(await child.exited, child.stderr()).toEqual({ code: 0, signal: null });
    return JSON.parse(child.stdout());
  }

  async function call(role: Role, method: string, params: unknown): Promise<any> {
    const { answers } = await calls(role, [[method, params]]);
    if (answers[0].error) throw Object.assign(new Error(answers[0].error.message), answers[0].error);
    return answers[0].result;
  }

  /** The CLI as `role`, on the shared socket. */
  async function cli(role: Role, args: string[]): Promise<string> {
    const command = [CLI_BIN, '--socket', socketPath, ...args];
    const child = role === 'root' ? spawnTracked(process.execPath, command, { cwd: '/' }) : spawnTracked('runuser', ['-u', USERS[role], '--', process.execPath, ...command], { cwd: '/' });
    expect(await child.exited, child.stderr()).toEqual({ code: 0, signal: null });
    return child.stdout();
  }

  const expectedWriter = (role: Role, pid: number, title: string): Writer => ({ ...account[role], pid, comm: title, exe: NODE_EXE });
  const recordAt = (seq: number) => waitFor(() => records.find((record) => record.seq === seq), 10_000, `record ${seq} on root's subscription`);

  /** Each role's task: created by one process, stepped and completed by another. */
  const tasks = {} as Record<Role, string>;

  it('stamps every record with the kernel\'s uid, gid and pid of its writer and the comm and exe /proc gave, for root and two users', async () => {
    for (const role of ['root', 'alice', 'bob'] as const) {
      const creator = await calls(role, [['create_task', { description: `${role}'s task`, mode: 'autonomous', steps: ['one'] }]]);
      const { task_id: taskId, seq: createdSeq } = creator.answers[0].result;
      tasks[role] = taskId;
      const stepper = await calls(role, [
        ['log_step', { task_id: taskId, step_num: 1, command: `whoami # ${role}`, status: 'success', output: role }],
        ['complete_task', { task_id: taskId, final_status: 'completed' }],
      ], `stepper-${role}`);
      expect(stepper.answers.map((answer) => answer.error)).toEqual([undefined, undefined]);
      expect((await recordAt(createdSeq)).writer).toEqual(expectedWriter(role, creator.pid, `agent-${role}`));
      for (const answer of stepper.answers) expect((await recordAt(answer.result.seq)).writer).toEqual(expectedWriter(role, stepper.pid, `stepper-${role}`));
      // The task view shows the creating record's writer, each step its own.
      const view: TaskView = await root.call('get_task', { task_id: taskId });
      expect(view.writer).toEqual(expectedWriter(role, creator.pid, `agent-${role}`));
      expect(view.steps[0].writer).toEqual(expectedWriter(role, stepper.pid, `stepper-${role}`));
    }
    expect(account.alice.uid).not.toBe(account.bob.uid);
  });

  it('refuses a writer param from a client (-32602): no client can say who it is', async () => {
    const forged = { uid: 0, gid: 0, pid: 1, comm: 'systemd', exe: '/usr/lib/systemd/systemd' };
    const { answers } = await calls('alice', [
      ['create_task', { description: 'forged', mode: 'autonomous', steps: [], writer: forged }],
      ['log_step', { task_id: tasks.alice, step_num: 2, command: 'x', status: 'success', writer: forged }],
      ['complete_task', { task_id: tasks.alice, final_status: 'completed', writer: forged }],
    ]);
    for (const answer of answers) {
      expect(answer.error?.code).toBe(-32602);
      expect(JSON.stringify(answer.error?.data)).toContain('writer');
    }
  });

  it("answers another user's task exactly as a missing one (1001) for reads and writes", async () => {
    const missing = 'task_1700000000_abcdef';
    const asAlice = (taskId: string) =>
      calls('alice', [
        ['get_task', { task_id: taskId }],
        ['get_task', { task_id: taskId, cursor: null }],
        ['log_step', { task_id: taskId, step_num: 9, command: 'echo not yours', status: 'success' }],
        ['complete_task', { task_id: taskId, final_status: 'aborted' }],
      ]);
    const generic = (answers: Answer[], taskId: string) => JSON.parse(JSON.stringify(answers.map((answer) => answer.error)).replaceAll(taskId, 'TASK'));
    const ofBob = await asAlice(tasks.bob);
    const ofNobody = await asAlice(missing);
    expect(generic(ofBob.answers, tasks.bob)).toEqual(generic(ofNobody.answers, missing));
    expect(ofBob.answers.map((answer) => answer.error?.code)).toEqual([1001, 1001, 1001, 1001]);
    // Bob's running task is refused the same way (not 1002 'finished', which would tell it exists).
    const running = await call('bob', 'create_task', { description: "bob's running task", mode: 'autonomous', steps: [] });
    const onRunning = await calls('alice', [['log_step', { task_id: running.task_id, step_num: 1, command: 'x', status: 'success' }]]);
    expect(onRunning.answers[0].error).toEqual({ code: 1001, message: `no task ${running.task_id}`, data: { task_id: running.task_id } });
    tasks.bob = running.task_id;
    expect((await call('bob', 'get_task', { task_id: running.task_id })).status).toBe('running');
  });

  it('shows each user only its own tasks in get_recent, to_dict and its pages, export and tail; root and the admin group see all', async () => {
    const created = await call('alice', 'create_task', { description: "alice's second task", mode: 'autonomous', steps: [] });
    const descriptions = (list: TaskView[]) => list.map((task) => task.description);
    const allOf = async (role: Role) => {
      const recent: TaskView[] = await call(role, 'get_recent', { count: 50 });
      const whole = await call(role, 'to_dict', {});
      const paged: TaskView[] = [];
      let counts: number[] = [];
      for (let cursor: string | null = null; ; ) {
        const page: { tasks: TaskView[]; count: number; next_cursor: string | null } = await call(role, 'to_dict', { cursor, page_bytes: 1024 });
        paged.push(...page.tasks);
        counts.push(page.count);
        if (page.next_cursor === null) break;
        cursor = page.next_cursor;
      }
      counts = [...new Set(counts)];
      return { recent: descriptions(recent), whole: descriptions(whole.tasks), count: whole.count, paged: descriptions(paged), counts };
    };
    const alice = ["alice's task", "alice's second task"];
    expect(await allOf('alice')).toEqual({ recent: alice, whole: alice, count: 2, paged: alice, counts: [2] });
    const bob = ["bob's task", "bob's running task"];
    expect(await allOf('bob')).toEqual({ recent: bob, whole: bob, count: 2, paged: bob, counts: [2] });
    const everyone = ["root's task", "alice's task", "bob's task", "bob's running task", "alice's second task"];
    for (const role of ['root', 'admin'] as const) expect(await allOf(role)).toEqual({ recent: everyone, whole: everyone, count: 5, paged: everyone, counts: [5] });

    const exported = JSON.parse(await cli('alice', ['--json', 'export']));
    expect(descriptions(exported.tasks)).toEqual(alice);
    const tail = await cli('alice', ['tail', '-n', '50']);
    expect(tail).toContain(created.task_id);
    expect(tail).not.toContain(tasks.bob);
    expect(tail).not.toMatch(/whoami # (bob|root)/);
  });

  it("sends each subscriber only the events of its own tasks, and an admin-group member every one", async () => {
    const subscribe = (role: Role, params: object) => {
      const child = client(role, `watch-${role}`, 'subscribe', { stopAt: `end of ${role}'s watch`, params });
      return { child, subscribed: waitFor(() => child.stdout().includes('"subscribed"'), 10_000, `${role}'s subscription`) };
    };
    const watchers = { alice: subscribe('alice', {}), admin: subscribe('admin', {}), aliceOnBob: subscribe('alice', { task_id: tasks.bob }) };
    await Promise.all(Object.values(watchers).map((watcher) => watcher.subscribed));
    await call('bob', 'log_step', { task_id: tasks.bob, step_num: 1, command: 'bob works', status: 'success' });
    const mine = await call('alice', 'create_task', { description: 'alice watched', mode: 'autonomous', steps: [] });
    await call('alice', 'log_step', { task_id: mine.task_id, step_num: 1, command: 'alice works', status: 'success' });
    await call('bob', 'complete_task', { task_id: tasks.bob, final_status: 'completed' });
    // Events come in commit order: once a watcher has its end marker, everything before it has arrived.
    await call('alice', 'create_task', { description: "end of alice's watch", mode: 'autonomous', steps: [] });
    await call('admin', 'create_task', { description: "end of admin's watch", mode: 'autonomous', steps: [] });
    await call('alice', 'create_task', { description: "end of aliceOnBob's watch", mode: 'autonomous', steps: [] });
    const seen = async (watcher: { child: ReturnType<typeof client> }) => {
      await watcher.child.exited.catch(() => undefined);
      return watcher.child.stdout().trim().split('\n').slice(1).map((text) => JSON.parse(text) as EventParams).map((event) => `${event.type} ${event.record.writer?.uid}`);
    };
    const { alice: a, bob: b, admin: m } = { alice: account.alice.uid, bob: account.bob.uid, admin: account.admin.uid };
    expect(await seen(watchers.alice)).toEqual([`task_created ${a}`, `step_logged ${a}`, `task_created ${a}`]);
    expect(await seen(watchers.admin)).toEqual([`step_logged ${b}`, `task_created ${a}`, `step_logged ${a}`, `task_completed ${b}`, `task_created ${a}`, `task_created ${m}`]);
    // Subscribing to another's task is allowed, as for a task that does not exist yet, and shows nothing of it.
    await waitFor(() => records.some((record) => record.type === 'task_created' && record.description === "end of aliceOnBob's watch"), 10_000, 'the last marker');
    expect(watchers.aliceOnBob.child.stdout().trim().split('\n').slice(1)).toEqual([]);
    // runuser passes SIGTERM on to the client it runs.
    process.kill(watchers.aliceOnBob.child.pid, 'SIGTERM');
    await watchers.aliceOnBob.child.exited;
  });

  it("status shows the caller's own counts beside the chain head, and lists only the caller's running tasks", async () => {
    const running = await call('alice', 'create_task', { description: 'alice still running', mode: 'autonomous', steps: [] });
    const asAlice: StatusResult = await call('alice', 'status', {});
    const asRoot: StatusResult = await call('root', 'status', {});
    const aliceTasks = (await call('alice', 'to_dict', {})).tasks as TaskView[];
    expect(asAlice.caller).toEqual({
      uid: account.alice.uid,
      sees: 'own',
      tasks: aliceTasks.length,
      running_tasks: aliceTasks.filter((task) => task.status === 'running').length,
    });
    expect(asAlice.running.map((task) => task.task_id)).toContain(running.task_id);
    expect(asAlice.running.every((task) => aliceTasks.some((own) => own.task_id === task.task_id))).toBe(true);
    expect({ tasks: asAlice.tasks, running: asAlice.running_tasks, head: asAlice.last_seq }).toEqual({ tasks: asRoot.tasks, running: asRoot.running_tasks, head: asRoot.last_seq });
    expect(asRoot.caller).toEqual({ uid: 0, sees: 'all', tasks: asRoot.tasks, running_tasks: asRoot.running_tasks });
    expect(asRoot.running.length).toBeGreaterThan(asAlice.running.length);
    // verify stays whole-chain for everyone.
    expect((await call('alice', 'verify', {})).checked).toBe((await call('root', 'verify', {})).checked);
  });

  it('show and tail display the writer', async () => {
    const view: TaskView = await root.call('get_task', { task_id: tasks.alice });
    const { uid, gid, pid } = view.writer as Writer;
    const shown = await cli('root', ['show', tasks.alice]);
    expect(shown).toMatch(new RegExp(`writer\\s+uid ${uid} gid ${gid} pid ${pid} comm "agent-alice" exe ${NODE_EXE}`));
    expect(shown).toContain(`by uid ${uid} gid ${gid} pid ${view.steps[0].writer?.pid} comm "stepper-alice"`);
    expect(await cli('root', ['tail', '--task', tasks.alice])).toContain(`[uid ${uid} pid ${pid} agent-alice]`);
  });

  it("signs the daemon's own records (tamper_detected) with the daemon's writer", async () => {
    const before = (await root.call('status', {})).last_seq as number;
    writeFileSync(daemon.dataFile, '{"not": "a history"}\n');
    const tamper = await waitFor(() => records.find((record) => record.type === 'tamper_detected' && record.seq > before), 15_000, 'a tamper_detected record');
    expect(tamper.writer).toEqual({ uid: 0, gid: 0, pid: daemon.pid, comm: 'node', exe: NODE_EXE });
  });
});

describe('the cloud keeps the writer', () => {
  it('stores each record with its writer, its chain verifies, and the fleet task detail shows it', async () => {
    const tokens = { machine: 'writers-machine-token-0123456789', admin: 'writers-admin-token-0123456789' };
    const cloud = await startCloud(await fileBackend.newSite(), { tokensFile: writeTokensFile([{ token: tokens.machine, machine_id: 'test-machine' }, { token: tokens.admin, admin: true }]) });
    const tokenFile = join(tempDir('taskhistory-writers-token-'), 'token');
    writeFileSync(tokenFile, `${tokens.machine}\n`, { mode: 0o600 });
    const daemon = await startDaemon({ args: ['--cloud-url', cloud.url, '--cloud-token-file', tokenFile, '--cloud-retry-max-ms', '300'] });
    const raw = await openRawSocket(daemon.socketPath);
    const { task_id: taskId } = await raw.call('create_task', { description: 'synced with its writer', mode: 'autonomous', steps: [] });
    const { seq } = await raw.call('log_step', { task_id: taskId, step_num: 1, command: 'sync', status: 'success', output: 'pushed' });
    const local: TaskView = await raw.call('get_task', { task_id: taskId });
    await waitFor(async () => (await raw.call('status', {})).cloud.acked_seq >= seq, 20_000, 'the cloud to acknowledge the step');

    const admin = await openCloudSocket(cloud.url, tokens.admin);
    const pulled: ChainRecord[] = (await admin.call('pull', { machine_id: 'test-machine', after_seq: 0, limit: 100 })).records;
    admin.close();
    // The writer is inside each hash: the cloud's records still chain from genesis.
    const walker = new ChainWalker({ seq: 0, hash: GENESIS_HASH }, sha256Hex);
    for (const record of pulled) walker.accept(record);
    const stored = pulled.filter((record) => 'task_id' in record && record.task_id === taskId);
    expect(stored.map((record) => record.writer)).toEqual([local.writer, local.steps[0].writer]);
    expect(local.writer).toMatchObject({ uid: 0, exe: NODE_EXE });
    const detail = await (await httpGet(cloud, `/v1/machines/test-machine/tasks/${taskId}`, tokens.admin)).json();
    expect(detail.writer).toEqual(local.writer);
    expect(detail.steps[0].writer).toEqual(local.steps[0].writer);
    raw.close();
    await daemon.stop();
    process.kill(cloud.pid, 'SIGTERM');
    await cloud.exited;

    // On disk the step names its task's writer as "task"; read back, it is the writer again.
    const file = JSON.parse(readFileSync(daemon.dataFile, 'utf8')) as { tasks: { writer: unknown; steps: { writer: unknown }[] }[] };
    expect(file.tasks[0].writer).toEqual(local.writer);
    expect(file.tasks[0].steps[0].writer).toBe('task');
    const again = await startDaemon({ dataDir: daemon.dataDir });
    const rawAgain = await openRawSocket(again.socketPath);
    expect(await rawAgain.call('get_task', { task_id: taskId })).toEqual(local);
    expect((await rawAgain.call('verify', {})).ok).toBe(true);
    rawAgain.close();
    await again.stop();
  });
});

describe('the native addon is required for attribution', () => {
  /** A copy of the built package without native/build: the addon cannot load there. */
  function packageWithoutAddon(): string {
    const dir = tempDir('taskhistory-no-addon-');
    cpSync(join(REPO, 'dist'), join(dir, 'dist'), { recursive: true });
    cpSync(join(REPO, 'package.json'), join(dir, 'package.json'));
    symlinkSync(join(REPO, 'node_modules'), join(dir, 'node_modules'));
    return dir;
  }

  it('refuses to start without it, naming the addon file and how to build it; --no-attribution starts and writes no writer', async () => {
    const copy = packageWithoutAddon();
    const run = tempDir('taskhistory-no-addon-run-');
    const daemonBin = join(copy, DAEMON_BIN.slice(REPO.length + 1));
    const args = [daemonBin, '--socket', join(run, 'run', 'd.sock'), '--data-dir', join(run, 'data'), '--machine-id', 'test-machine'];
    const refused = spawnTracked(process.execPath, args, { env: environmentWithoutSettings() });
    expect((await refused.exited).code).toBe(1);
    const addonFile = join(copy, 'native', 'build', 'Release', 'taskhistory_native.node');
    expect(refused.stderr()).toContain(`cannot load the native addon ${addonFile}`);
    expect(refused.stderr()).toContain(`"npm rebuild" in ${copy}`);
    expect(refused.stderr()).toContain('--no-attribution');

    const unattributed = spawnTracked(process.execPath, [...args, '--no-attribution'], { env: environmentWithoutSettings() });
    const raw = await waitFor(() => openRawSocket(join(run, 'run', 'd.sock')).catch(() => null), 15_000, 'the daemon without the addon to serve');
    await raw.call('subscribe', {});
    const { task_id: taskId } = await raw.call('create_task', { description: 'nobody in particular', mode: 'autonomous', steps: [] });
    const event = (await raw.next()).params as EventParams;
    expect(event.record.type).toBe('task_created');
    expect('writer' in event.record).toBe(false);
    expect('writer' in (await raw.call('get_task', { task_id: taskId }))).toBe(false);
    expect((await raw.call('status', {})).caller).toEqual({ uid: null, sees: 'all', tasks: 1, running_tasks: 1 });
    raw.close();
    process.kill(unattributed.pid, 'SIGTERM');
    expect((await unattributed.exited).code).toBe(0);
  });
});
