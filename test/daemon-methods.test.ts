import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../protocol/errors.js';
import { truncationMarker } from '../protocol/limits.js';
import { BUILTIN_REDACTION_RULES } from '../protocol/redaction.js';
import { openRawSocket, REPO, startDaemon, type Daemon, type RawSocket } from './daemon-harness.js';

/** Every daemon method: its result shape (the original model's keys) and each error it can answer. */

const CAPS = { field: 100, description: 50, command: 60, plan: 200 };
const MAX_TASKS = 50;
const VERSION = (JSON.parse(readFileSync(`${REPO}/package.json`, 'utf8')) as { version: string }).version;

/** `writer`: who wrote the record, from the kernel (test/writers.test.ts checks its values). */
const TASK_KEYS = ['description', 'machine_id', 'mode', 'plan', 'planned_steps', 'seq', 'status', 'steps', 'task_id', 'timestamp', 'writer'];
const STEP_KEYS = ['command', 'seq', 'status', 'step', 'timestamp', 'writer'];
const STATUS_KEYS = [
  'caller', 'checkpoint_seq', 'cloud', 'data_file', 'head_hash', 'last_seq', 'machine_id', 'max_tasks', 'pid', 'redaction',
  'running', 'running_tasks', 'socket', 'storage_error', 'tamper', 'tasks', 'uptime_s', 'version',
];

/** What the daemon redacts with no config file, in order: specific token shapes before the generic ones. */
const BUILTIN_RULE_NAMES = [
  'private-key', 'aws-access-key-id', 'github-token', 'gitlab-token', 'slack-token', 'aws-secret-key', 'bearer-token',
  'basic-auth', 'url-credentials', 'curl-user', 'mysql-password', 'password-assignment',
];

const sortedKeys = (value: object) => Object.keys(value).sort();
const nowSeconds = () => Date.now() / 1000;

describe('daemon methods', () => {
  let daemon: Daemon;
  let rpc: RawSocket;

  beforeAll(async () => {
    daemon = await startDaemon({
      args: [
        '--max-tasks', String(MAX_TASKS),
        '--field-cap-bytes', String(CAPS.field),
        '--description-cap-bytes', String(CAPS.description),
        '--command-cap-bytes', String(CAPS.command),
        '--plan-cap-bytes', String(CAPS.plan),
      ],
    });
    rpc = await openRawSocket(daemon.socketPath);
  });
  afterAll(() => rpc?.close());

  const lastSeq = async (): Promise<number> => (await rpc.call('status')).last_seq;
  const newTask = async (description = 'a task', steps: unknown[] = []): Promise<string> =>
    (await rpc.call('create_task', { description, mode: 'autonomous', steps })).task_id;

  /** The error of a call that must fail and must leave the chain as it was. */
  async function refusal(method: string, params?: unknown): Promise<{ code: number; message: string; data?: any }> {
    const before = await lastSeq();
    const response = await rpc.request(method, params);
    expect(response).not.toHaveProperty('result');
    expect(await lastSeq()).toBe(before);
    return response.error;
  }

  /** The fields named in a -32602 answer's data. */
  async function invalidFields(method: string, params?: unknown): Promise<string[]> {
    const error = await refusal(method, params);
    expect(error.code).toBe(ErrorCodes.InvalidParams);
    expect(error.message).toMatch(/^Invalid params: /);
    return (error.data.issues as { field: string; message: string }[]).map((issue) => issue.field).sort();
  }

  describe('create_task', () => {
    it('answers {task_id, seq}; the task holds exactly the original keys plus plan and seq', async () => {
      const before = nowSeconds();
      const plan = [{ command: 'make' }, 'make test', 3];
      const created = await rpc.call('create_task', { description: 'build it', mode: 'step-by-step', steps: plan });
      const after = nowSeconds();

      expect(sortedKeys(created)).toEqual(['seq', 'task_id']);
      const [, seconds] = /^task_(\d+)_[0-9a-f]{6}$/.exec(created.task_id) ?? [];
      expect(Number(seconds)).toBeGreaterThanOrEqual(Math.floor(before) - 1);
      expect(Number(seconds)).toBeLessThanOrEqual(Math.ceil(after) + 1);
      expect(created.seq).toBe(await lastSeq());

      const task = await rpc.call('get_task', { task_id: created.task_id });
      expect(sortedKeys(task)).toEqual(TASK_KEYS);
      expect(task).toMatchObject({
        task_id: created.task_id,
        description: 'build it',
        mode: 'step-by-step',
        planned_steps: 3,
        plan,
        steps: [],
        status: 'running',
        machine_id: 'test-machine',
        seq: created.seq,
      });
      // Float Unix seconds, like Python's time.time(): not milliseconds, not an ISO string.
      expect(typeof task.timestamp).toBe('number');
      expect(task.timestamp).toBeGreaterThan(before - 1);
      expect(task.timestamp).toBeLessThan(after + 1);
    });

    it('keeps the agent when given', async () => {
      const created = await rpc.call('create_task', { description: 'with agent', mode: 'approve-once', steps: [], agent: 'claude' });
      const task = await rpc.call('get_task', { task_id: created.task_id });
      expect(sortedKeys(task)).toEqual([...TASK_KEYS, 'agent'].sort());
      expect(task.agent).toBe('claude');
    });

    it('refuses missing, mistyped and unknown params with -32602 naming each field', async () => {
      expect(await invalidFields('create_task', {})).toEqual(['description', 'mode', 'steps']);
      expect(await invalidFields('create_task')).toEqual(['description', 'mode', 'steps']);
      expect(await invalidFields('create_task', { description: '', mode: 'yolo', steps: 'make' })).toEqual(['description', 'mode', 'steps']);
      expect(await invalidFields('create_task', { description: 'd', mode: 'autonomous', steps: [], colour: 'red' })).toEqual(['colour']);
      expect(await invalidFields('create_task', { description: 7, mode: 'autonomous', steps: [] })).toEqual(['description']);
    });

    it('refuses positional params with -32602', async () => {
      const error = await refusal('create_task', ['d', 'autonomous', []]);
      expect(error).toEqual({ code: ErrorCodes.InvalidParams, message: 'params must be an object of named parameters', data: { expected: 'object' } });
    });

    it('refuses a plan over --plan-cap-bytes with PayloadTooLarge and records nothing', async () => {
      const steps = ['x'.repeat(CAPS.plan)];
      const error = await refusal('create_task', { description: 'too big', mode: 'autonomous', steps });
      expect(error).toEqual({ code: ErrorCodes.PayloadTooLarge, message: `steps (the plan) is over ${CAPS.plan} bytes`, data: { field: 'steps', limit: CAPS.plan } });
      const fits = ['x'.repeat(CAPS.plan - 4)]; // ["…"] adds 4 bytes: exactly at the cap
      expect((await rpc.call('create_task', { description: 'fits', mode: 'autonomous', steps: fits })).task_id).toMatch(/^task_/);
    });

    it('stores a description over --description-cap-bytes truncated, with the marker naming its length', async () => {
      const taskId = await newTask('d'.repeat(CAPS.description + 1));
      expect((await rpc.call('get_task', { task_id: taskId })).description).toBe('d'.repeat(CAPS.description) + truncationMarker(CAPS.description + 1));
      const exact = await newTask('e'.repeat(CAPS.description));
      expect((await rpc.call('get_task', { task_id: exact })).description).toBe('e'.repeat(CAPS.description));
    });
  });

  describe('log_step', () => {
    it('appends steps with only the keys given; empty texts are left out as in the original', async () => {
      const taskId = await newTask();
      const before = nowSeconds();
      const first = await rpc.call('log_step', { task_id: taskId, step_num: 1, command: 'ls', status: 'success' });
      const second = await rpc.call('log_step', {
        task_id: taskId, step_num: 2, command: 'make', status: 'failed',
        output: 'built half', error: 'cc: error', recovery: 'ran make clean',
        started_at: 1_700_000_000.25, duration_ms: 12.5, exit_code: 2,
      });
      const third = await rpc.call('log_step', { task_id: taskId, step_num: 3, command: 'true', status: 'success', output: '', error: '', recovery: '' });
      expect(sortedKeys(first)).toEqual(['seq']);
      expect([second.seq, third.seq]).toEqual([first.seq + 1, first.seq + 2]);

      const { steps } = await rpc.call('get_task', { task_id: taskId });
      expect(steps.map(sortedKeys)).toEqual([
        STEP_KEYS,
        [...STEP_KEYS, 'duration_ms', 'error', 'exit_code', 'output', 'recovery', 'started_at'].sort(),
        STEP_KEYS,
      ]);
      expect(steps[0]).toMatchObject({ step: 1, command: 'ls', status: 'success', seq: first.seq });
      expect(steps[1]).toMatchObject({
        step: 2, command: 'make', status: 'failed', output: 'built half', error: 'cc: error', recovery: 'ran make clean',
        started_at: 1_700_000_000.25, duration_ms: 12.5, exit_code: 2, seq: second.seq,
      });
      expect(steps[0].timestamp).toBeGreaterThan(before - 1);
      expect(steps[0].timestamp).toBeLessThan(nowSeconds() + 1);
    });

    it('stores output, error and recovery over --field-cap-bytes truncated, the marker naming the original length', async () => {
      const taskId = await newTask();
      const utf8 = `a${'é'.repeat(100)}`; // 201 bytes; byte 100 falls inside an "é"
      await rpc.call('log_step', {
        task_id: taskId, step_num: 1, command: 'c'.repeat(CAPS.command + 1), status: 'success',
        output: 'o'.repeat(300), error: utf8, recovery: 'r'.repeat(CAPS.field),
      });
      const [step] = (await rpc.call('get_task', { task_id: taskId })).steps;
      expect(step.output).toBe('o'.repeat(CAPS.field) + truncationMarker(300));
      expect(step.error).toBe(`a${'é'.repeat(49)}${truncationMarker(201)}`);
      expect(step.recovery).toBe('r'.repeat(CAPS.field));
      expect(step.command).toBe('c'.repeat(CAPS.command) + truncationMarker(CAPS.command + 1));
    });

    it('answers TaskNotFound for an unknown task', async () => {
      const error = await refusal('log_step', { task_id: 'task_1_abcdef', step_num: 1, command: 'ls', status: 'success' });
      expect(error).toEqual({ code: ErrorCodes.TaskNotFound, message: 'no task task_1_abcdef', data: { task_id: 'task_1_abcdef' } });
    });

    it('answers TaskFinished once the task is complete', async () => {
      const taskId = await newTask();
      await rpc.call('complete_task', { task_id: taskId, final_status: 'completed' });
      const error = await refusal('log_step', { task_id: taskId, step_num: 1, command: 'ls', status: 'success' });
      expect(error).toEqual({ code: ErrorCodes.TaskFinished, message: `task ${taskId} is already finished; the log is append-only`, data: { task_id: taskId } });
      expect((await rpc.call('get_task', { task_id: taskId })).steps).toEqual([]);
    });

    it('refuses bad params with -32602 naming each field', async () => {
      const taskId = await newTask();
      const good = { task_id: taskId, step_num: 1, command: 'ls', status: 'success' };
      expect(await invalidFields('log_step', {})).toEqual(['command', 'status', 'step_num', 'task_id']);
      expect(await invalidFields('log_step', { ...good, step_num: '1' })).toEqual(['step_num']);
      expect(await invalidFields('log_step', { ...good, step_num: 0 })).toEqual(['step_num']);
      expect(await invalidFields('log_step', { ...good, status: 'ok' })).toEqual(['status']);
      expect(await invalidFields('log_step', { ...good, exit_code: 1.5, duration_ms: -1 })).toEqual(['duration_ms', 'exit_code']);
      expect(await invalidFields('log_step', { ...good, output: 42 })).toEqual(['output']);
      expect(await invalidFields('log_step', { ...good, stdout: 'x' })).toEqual(['stdout']);
      expect((await refusal('log_step', [taskId, 1, 'ls', 'success'])).code).toBe(ErrorCodes.InvalidParams);
    });
  });

  describe('complete_task', () => {
    it('sets the final status and completed_at; running before', async () => {
      const taskId = await newTask();
      expect((await rpc.call('get_task', { task_id: taskId })).status).toBe('running');
      const before = nowSeconds();
      const { seq } = await rpc.call('complete_task', { task_id: taskId, final_status: 'aborted' });
      expect(seq).toBe(await lastSeq());
      const task = await rpc.call('get_task', { task_id: taskId });
      expect(sortedKeys(task)).toEqual([...TASK_KEYS, 'completed_at', 'completed_seq'].sort());
      expect(task.completed_seq).toBe(seq);
      expect(task.status).toBe('aborted');
      expect(task.completed_at).toBeGreaterThanOrEqual(task.timestamp);
      expect(task.completed_at).toBeGreaterThan(before - 1);
    });

    it('answers TaskFinished for a second complete and keeps the first status', async () => {
      const taskId = await newTask();
      await rpc.call('complete_task', { task_id: taskId, final_status: 'failed' });
      const error = await refusal('complete_task', { task_id: taskId, final_status: 'completed' });
      expect(error.code).toBe(ErrorCodes.TaskFinished);
      expect(error.data).toEqual({ task_id: taskId });
      expect((await rpc.call('get_task', { task_id: taskId })).status).toBe('failed');
    });

    it('answers TaskNotFound for an unknown task and -32602 for a bad status', async () => {
      expect((await refusal('complete_task', { task_id: 'task_2_000000', final_status: 'completed' })).code).toBe(ErrorCodes.TaskNotFound);
      expect(await invalidFields('complete_task', { task_id: await newTask(), final_status: 'done' })).toEqual(['final_status']);
      expect(await invalidFields('complete_task', {})).toEqual(['final_status', 'task_id']);
    });
  });

  describe('get_task', () => {
    it('answers TaskNotFound for an unknown task and -32602 without task_id', async () => {
      expect(await refusal('get_task', { task_id: 'task_3_ffffff' })).toEqual({ code: ErrorCodes.TaskNotFound, message: 'no task task_3_ffffff', data: { task_id: 'task_3_ffffff' } });
      expect(await invalidFields('get_task', {})).toEqual(['task_id']);
      expect(await invalidFields('get_task', { task_id: '' })).toEqual(['task_id']);
    });
  });

  describe('get_recent and to_dict', () => {
    it('get_recent lists the newest tasks oldest first, newest last', async () => {
      const ids = [await newTask('first'), await newTask('second'), await newTask('third')];
      expect((await rpc.call('get_recent', { count: 3 })).map((t: { task_id: string }) => t.task_id)).toEqual(ids);
      expect((await rpc.call('get_recent', { count: 1 })).map((t: { task_id: string }) => t.task_id)).toEqual([ids[2]]);
      const all = (await rpc.call('to_dict')).tasks;
      expect(await rpc.call('get_recent', { count: 1000 })).toEqual(all);
      expect(await rpc.call('get_recent')).toEqual(all.slice(-10));
      expect(await rpc.call('get_recent', {})).toEqual(all.slice(-10));
    });

    it('get_recent refuses a count outside 1..1000 or not an integer', async () => {
      for (const count of [0, -1, 1001, 2.5, '3', null]) expect(await invalidFields('get_recent', { count })).toEqual(['count']);
    });

    it('to_dict is exactly {tasks, count, max_tasks}, every task in creation order', async () => {
      const dict = await rpc.call('to_dict');
      expect(sortedKeys(dict)).toEqual(['count', 'max_tasks', 'tasks']);
      expect(dict.count).toBe(dict.tasks.length);
      expect(dict.max_tasks).toBe(MAX_TASKS);
      const seqs = dict.tasks.map((t: { seq: number }) => t.seq);
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
      for (const task of dict.tasks) expect(await rpc.call('get_task', { task_id: task.task_id })).toEqual(task);
      expect(await invalidFields('to_dict', { verbose: true })).toEqual(['verbose']);
    });
  });

  describe('status, verify, redaction_rules', () => {
    it('status reports the daemon, its files and the running tasks', async () => {
      const taskId = (await rpc.call('create_task', { description: 'watched', mode: 'autonomous', steps: [], agent: 'status-test' })).task_id;
      await rpc.call('log_step', { task_id: taskId, step_num: 1, command: 'ls', status: 'success' });
      const status = await rpc.call('status');
      const dict = await rpc.call('to_dict');
      const verify = await rpc.call('verify');

      expect(sortedKeys(status)).toEqual(STATUS_KEYS);
      expect(status).toMatchObject({
        version: VERSION,
        pid: daemon.pid,
        machine_id: 'test-machine',
        socket: daemon.socketPath,
        data_file: daemon.dataFile,
        tasks: dict.count,
        running_tasks: dict.tasks.filter((t: { status: string }) => t.status === 'running').length,
        max_tasks: MAX_TASKS,
        last_seq: verify.head.seq,
        head_hash: verify.head.hash,
        redaction: true,
        storage_error: null,
        tamper: { count: 0, last: null },
        cloud: { state: 'disabled', url: null, queued: 0 },
      });
      expect(status.head_hash).toMatch(/^[0-9a-f]{64}$/);
      expect(status.checkpoint_seq).toBeLessThanOrEqual(status.last_seq);
      expect(status.running.map((r: { task_id: string }) => r.task_id)).toEqual(
        dict.tasks.filter((t: { status: string }) => t.status === 'running').map((t: { task_id: string }) => t.task_id),
      );
      const mine = status.running.find((r: { task_id: string }) => r.task_id === taskId);
      expect(sortedKeys(mine)).toEqual(['age_s', 'agent', 'description', 'steps', 'task_id']);
      expect(mine).toMatchObject({ description: 'watched', agent: 'status-test', steps: 1 });
      expect(await invalidFields('status', { all: true })).toEqual(['all']);
    });

    it('verify reports the chain on disk intact up to the head', async () => {
      const report = await rpc.call('verify');
      expect(report).toEqual({ ok: true, checked: expect.any(Number), first_bad_seq: null, reason: null, head: { seq: await lastSeq(), hash: (await rpc.call('status')).head_hash } });
      expect(await invalidFields('verify', { deep: true })).toEqual(['deep']);
    });

    it('redaction_rules lists every built-in rule, in the order they run, with its description', async () => {
      const result = await rpc.call('redaction_rules');
      expect(sortedKeys(result)).toEqual(['enabled', 'rules']);
      expect(result.enabled).toBe(true);
      expect(result.rules.map((rule: { name: string }) => rule.name)).toEqual(BUILTIN_RULE_NAMES);
      expect(result.rules).toEqual(BUILTIN_REDACTION_RULES.map(({ name, description }) => ({ name, description, source: 'builtin' })));
      expect(await invalidFields('redaction_rules', { source: 'config' })).toEqual(['source']);
    });
  });

  describe('subscribe and unsubscribe', () => {
    it('delivers committed records as event notifications, all or for one task', async () => {
      const watcher = await openRawSocket(daemon.socketPath);
      const all = (await watcher.call('subscribe')).subscription;
      const watched = await newTask('watched by id');
      const one = (await watcher.call('subscribe', { task_id: watched })).subscription;
      expect(one).not.toBe(all);

      const other = await newTask('not watched');
      const step = await rpc.call('log_step', { task_id: watched, step_num: 1, command: 'ls', status: 'success' });
      const events = [await watcher.next(), await watcher.next(), await watcher.next(), await watcher.next()];
      for (const event of events) {
        expect(sortedKeys(event)).toEqual(['jsonrpc', 'method', 'params']);
        expect(event.method).toBe('event');
        expect(sortedKeys(event.params)).toEqual(['hash', 'record', 'seq', 'subscription', 'task_id', 'ts', 'type']);
        expect(event.params.hash).toBe(event.params.record.hash);
        expect(event.params.seq).toBe(event.params.record.seq);
      }
      expect(events.map((e) => [e.params.subscription, e.params.type, e.params.task_id])).toEqual([
        [all, 'task_created', watched],
        [all, 'task_created', other],
        [all, 'step_logged', watched],
        [one, 'step_logged', watched],
      ]);
      expect(events[2].params.seq).toBe(step.seq);
      expect(events[3].params.seq).toBe(step.seq);

      expect(await watcher.call('unsubscribe', { subscription: all })).toEqual({ unsubscribed: true });
      await rpc.call('complete_task', { task_id: other, final_status: 'completed' });
      await rpc.call('complete_task', { task_id: watched, final_status: 'completed' });
      const last = await watcher.next();
      expect([last.params.subscription, last.params.type, last.params.task_id]).toEqual([one, 'task_completed', watched]);
      watcher.close();
    });

    it('unsubscribe answers SubscriptionNotFound for unknown ids and ids of other connections', async () => {
      const other = await openRawSocket(daemon.socketPath);
      const theirs = (await other.call('subscribe')).subscription;
      expect(await refusal('unsubscribe', { subscription: theirs })).toEqual({ code: ErrorCodes.SubscriptionNotFound, message: `no subscription ${theirs} on this connection` });
      expect((await refusal('unsubscribe', { subscription: 'sub-999999' })).code).toBe(ErrorCodes.SubscriptionNotFound);
      const mine = (await rpc.call('subscribe')).subscription;
      expect(await rpc.call('unsubscribe', { subscription: mine })).toEqual({ unsubscribed: true });
      expect((await refusal('unsubscribe', { subscription: mine })).code).toBe(ErrorCodes.SubscriptionNotFound);
      expect(await invalidFields('unsubscribe', {})).toEqual(['subscription']);
      expect(await invalidFields('subscribe', { task_id: 5 })).toEqual(['task_id']);
      other.close();
    });
  });

  it('answers -32601 for methods that do not exist, names being case-sensitive', async () => {
    for (const method of ['Status', 'create-task', 'delete_task', 'rpc.discover']) {
      expect(await refusal(method, {})).toEqual({ code: ErrorCodes.MethodNotFound, message: 'Method not found' });
    }
  });
});
