import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { CallTimeoutError, DaemonUnreachableError, TaskHistoryClient, TaskHistoryError } from '../client/sdk.js';
import { ErrorCodes } from '../protocol/errors.js';
import type { EventParams } from '../protocol/methods.js';
import { startDaemon, type Daemon } from './daemon-harness.js';
import { tempDir, waitFor } from './processes.js';

/** The error a promise rejects with (fails the test when it resolves). */
async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected the call to fail, it succeeded');
}

describe('TaskHistoryClient against the real daemon', () => {
  let daemon: Daemon;
  let client: TaskHistoryClient;

  beforeAll(async () => {
    daemon = await startDaemon();
    client = await TaskHistoryClient.connect({ socketPath: daemon.socketPath });
  });
  afterAll(async () => {
    await client?.close();
  });

  it('creates a task, logs steps with timing, completes it, and reads it back every way', async () => {
    const plan = [{ command: 'make' }, { command: 'make test', note: 'kept as given' }];
    const created = await client.createTask({ description: 'build it', mode: 'step-by-step', steps: plan, agent: 'sdk-test' });
    expect(created.task_id).toMatch(/^task_\d+_[0-9a-f]{6}$/);
    expect(created.seq).toBe(1);

    const first = await client.logStep({
      task_id: created.task_id,
      step_num: 1,
      command: 'make',
      status: 'success',
      output: 'built',
      started_at: 1_700_000_000.5,
      duration_ms: 1234.5,
      exit_code: 0,
    });
    const second = await client.logStep({ task_id: created.task_id, step_num: 2, command: 'make test', status: 'failed', error: '1 failed', recovery: 'retried' });
    expect([first.seq, second.seq]).toEqual([2, 3]);
    const completed = await client.completeTask({ task_id: created.task_id, final_status: 'failed' });
    expect(completed.seq).toBe(4);

    const task = await client.getTask(created.task_id);
    expect(task).toMatchObject({
      task_id: created.task_id,
      description: 'build it',
      mode: 'step-by-step',
      planned_steps: 2,
      plan,
      agent: 'sdk-test',
      status: 'failed',
      machine_id: 'test-machine',
    });
    expect(task.steps[0]).toMatchObject({ step: 1, status: 'success', output: 'built', started_at: 1_700_000_000.5, duration_ms: 1234.5, exit_code: 0 });
    expect(task.steps[1]).toMatchObject({ step: 2, status: 'failed', error: '1 failed', recovery: 'retried' });
    expect(task.steps[1]).not.toHaveProperty('exit_code');

    const later = await client.createTask({ description: 'second', mode: 'autonomous', steps: [] });
    expect((await client.getRecent()).map((t) => t.task_id)).toEqual([created.task_id, later.task_id]);
    expect((await client.getRecent(1)).map((t) => t.task_id)).toEqual([later.task_id]);

    const dict = await client.toDict();
    expect(dict.count).toBe(2);
    expect(dict.max_tasks).toBe(100);
    expect(dict.tasks[0]).toEqual(task);

    const status = await client.status();
    expect(status).toMatchObject({ machine_id: 'test-machine', socket: daemon.socketPath, tasks: 2, running_tasks: 1, last_seq: 5 });
    expect(status.running.map((r) => r.task_id)).toEqual([later.task_id]);

    expect(await client.verify()).toMatchObject({ ok: true, first_bad_seq: null, head: { seq: 5 } });

    const redaction = await client.redactionRules();
    expect(redaction.enabled).toBe(true);
    expect(redaction.rules.map((rule) => rule.name)).toContain('aws-access-key-id');
  });

  it('surfaces daemon errors as TaskHistoryError with the protocol code', async () => {
    const missing = await rejection(client.getTask('task_1_000000'));
    expect(missing).toBeInstanceOf(TaskHistoryError);
    expect((missing as TaskHistoryError).code).toBe(ErrorCodes.TaskNotFound);
    expect((missing as TaskHistoryError).method).toBe('get_task');

    const { task_id } = await client.createTask({ description: 'finished early', mode: 'autonomous', steps: [] });
    await client.completeTask({ task_id, final_status: 'completed' });
    const again = await rejection(client.completeTask({ task_id, final_status: 'aborted' }));
    expect((again as TaskHistoryError).code).toBe(ErrorCodes.TaskFinished);
    const stepAfter = await rejection(client.logStep({ task_id, step_num: 1, command: 'late', status: 'success' }));
    expect((stepAfter as TaskHistoryError).code).toBe(ErrorCodes.TaskFinished);

    const badMode = await rejection(client.createTask({ description: 'x', mode: 'sometimes' as 'autonomous', steps: [] }));
    expect(badMode).toBeInstanceOf(TaskHistoryError);
    expect((badMode as TaskHistoryError).code).toBe(ErrorCodes.InvalidParams);
    expect((badMode as TaskHistoryError).data).toBeDefined();
    const badStep = await rejection(client.logStep({ task_id, step_num: 0, command: 'x', status: 'success' }));
    expect((badStep as TaskHistoryError).code).toBe(ErrorCodes.InvalidParams);

    // The connection stays usable after errors.
    expect((await client.status()).machine_id).toBe('test-machine');
  });

  it('delivers subscribed events in commit order, filters by task, and stops after unsubscribe', async () => {
    const everything: EventParams[] = [];
    const filtered: EventParams[] = [];
    const dropped: EventParams[] = [];
    const all = await client.subscribe((event) => everything.push(event));
    const toDrop = await client.subscribe((event) => dropped.push(event));
    await toDrop.unsubscribe();

    const watched = await client.createTask({ description: 'watched', mode: 'autonomous', steps: [] });
    const byTask = await client.subscribe((event) => filtered.push(event), { task_id: watched.task_id });
    const other = await client.createTask({ description: 'other', mode: 'autonomous', steps: [] });
    for (let step = 1; step <= 3; step++) {
      await client.logStep({ task_id: watched.task_id, step_num: step, command: `step ${step}`, status: 'success' });
      await client.logStep({ task_id: other.task_id, step_num: step, command: `other ${step}`, status: 'success' });
    }
    const done = await client.completeTask({ task_id: watched.task_id, final_status: 'completed' });

    await waitFor(() => everything.some((event) => event.seq === done.seq), 5000, 'the completion event');
    await waitFor(() => filtered.some((event) => event.seq === done.seq), 5000, 'the filtered completion event');
    const seqs = everything.map((event) => event.seq);
    expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => seqs[0] + i));
    expect(everything.map((event) => event.type)).toEqual(['task_created', 'task_created', ...Array(6).fill('step_logged'), 'task_completed']);
    expect(everything.every((event) => event.subscription === all.subscription && event.record.seq === event.seq)).toBe(true);
    expect(filtered.map((event) => [event.type, event.task_id])).toEqual([
      ['step_logged', watched.task_id],
      ['step_logged', watched.task_id],
      ['step_logged', watched.task_id],
      ['task_completed', watched.task_id],
    ]);
    expect(filtered.every((event) => event.subscription === byTask.subscription)).toBe(true);
    expect(dropped).toEqual([]);
    await all.unsubscribe();
    await byTask.unsubscribe();
  });

  it('refuses to unsubscribe twice with SubscriptionNotFound', async () => {
    const subscription = await client.subscribe(() => undefined);
    await subscription.unsubscribe();
    const error = await rejection(subscription.unsubscribe());
    expect((error as TaskHistoryError).code).toBe(ErrorCodes.SubscriptionNotFound);
  });
});

describe('TaskHistoryClient without a daemon', () => {
  it('names the socket it tried and how to start a daemon', async () => {
    const socketPath = join(tempDir(), 'nobody.sock');
    const error = await rejection(TaskHistoryClient.connect({ socketPath }));
    expect(error).toBeInstanceOf(DaemonUnreachableError);
    expect((error as DaemonUnreachableError).socketPath).toBe(socketPath);
    expect((error as DaemonUnreachableError).errno).toBe('ENOENT');
    expect(error.message).toBe(`no daemon answers on ${socketPath} (ENOENT); start one with 'taskhistoryd' or 'npm start', or pass --socket`);
  });

  it('resolves the socket from TASKHISTORY_SOCKET like the daemon does', async () => {
    const daemon = await startDaemon();
    const saved = process.env.TASKHISTORY_SOCKET;
    process.env.TASKHISTORY_SOCKET = daemon.socketPath;
    try {
      const client = await TaskHistoryClient.connect();
      expect(client.socketPath).toBe(daemon.socketPath);
      expect((await client.status()).socket).toBe(daemon.socketPath);
      await client.close();
    } finally {
      if (saved === undefined) delete process.env.TASKHISTORY_SOCKET;
      else process.env.TASKHISTORY_SOCKET = saved;
    }
  });

  it('rejects calls with DaemonUnreachableError once the daemon has gone', async () => {
    const daemon = await startDaemon();
    const client = await TaskHistoryClient.connect({ socketPath: daemon.socketPath });
    const closed = new Promise<DaemonUnreachableError>((resolve) => client.onClose(resolve));
    await daemon.stop();
    expect((await closed).socketPath).toBe(daemon.socketPath);
    const error = await rejection(client.status());
    expect(error).toBeInstanceOf(DaemonUnreachableError);
    expect(error.message).toContain(daemon.socketPath);
  });
});

describe('TaskHistoryClient when the daemon does not answer in time', () => {
  /** Whether the process is stopped (state T in /proc/PID/stat). */
  const isStopped = (pid: number) => readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].startsWith('T');

  it('says a write may have been recorded and how to check; after the daemon goes on, it was', async () => {
    const daemon = await startDaemon();
    const client = await TaskHistoryClient.connect({ socketPath: daemon.socketPath, timeoutMs: 500 });
    const { task_id } = await client.createTask({ description: 'timed out', mode: 'autonomous', steps: [] });
    process.kill(daemon.pid, 'SIGSTOP');
    let step: Error;
    let create: Error;
    let read: Error;
    try {
      await waitFor(() => isStopped(daemon.pid), 5000, 'the daemon to stop');
      [step, create, read] = await Promise.all([
        rejection(client.logStep({ task_id, step_num: 1, command: 'sent while stopped', status: 'success' })),
        rejection(client.createTask({ description: 'created while stopped', mode: 'autonomous', steps: [] })),
        rejection(client.status()),
      ]);
    } finally {
      process.kill(daemon.pid, 'SIGCONT');
    }
    const socket = daemon.socketPath;
    expect(step).toBeInstanceOf(CallTimeoutError);
    expect(step).toBeInstanceOf(DaemonUnreachableError);
    expect((step as CallTimeoutError).errno).toBe('ETIMEDOUT');
    expect(step.message).toBe(
      `the daemon on ${socket} did not answer log_step within 500 ms; it may have been recorded: check with get_task("${task_id}") or \`taskhistory show ${task_id}\` before retrying`,
    );
    expect(create.message).toBe(
      `the daemon on ${socket} did not answer create_task within 500 ms; the task may have been created: check with get_recent() or \`taskhistory recent\` before retrying`,
    );
    expect(read.message).toBe(`the daemon on ${socket} did not answer status within 500 ms`);

    // The same connection serves on, and both writes were in fact recorded.
    const task = await waitFor(async () => {
      const current = await client.getTask(task_id);
      return current.steps.length > 0 ? current : null;
    }, 10_000, 'the step sent while the daemon was stopped');
    expect(task.steps.map((s) => s.command)).toEqual(['sent while stopped']);
    expect((await client.getRecent()).map((t) => t.description)).toEqual(['timed out', 'created while stopped']);
    await client.close();
  });
});
