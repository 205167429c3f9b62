import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TaskHistoryClient } from '../client/sdk.js';
import { DEFAULT_FIELD_CAP_BYTES } from '../protocol/limits.js';
import type { TaskView } from '../protocol/task-view.js';
import { runCli, startDaemon, type Daemon, type CliRun } from './daemon-harness.js';
import { tempDir } from './processes.js';

const cli = (args: string[], stdin?: string) => runCli(args, { stdin });

describe('taskhistory exec against the real daemon', () => {
  let daemon: Daemon;
  let client: TaskHistoryClient;
  let exec: (args: string[], stdin?: string) => Promise<CliRun>;
  const newTask = async () => (await client.createTask({ description: 'exec target', mode: 'autonomous', steps: [] })).task_id;

  beforeAll(async () => {
    daemon = await startDaemon();
    client = await TaskHistoryClient.connect({ socketPath: daemon.socketPath });
    exec = (args, stdin) => cli(['--socket', daemon.socketPath, 'exec', ...args], stdin);
  });
  afterAll(async () => client?.close());

  it('passes output through, logs a successful step with captured output and timing, and exits 0', async () => {
    const taskId = await newTask();
    const before = Date.now() / 1000;
    const run = await exec(['--task', taskId, '--', 'sh', '-c', 'echo out-line; echo err-line >&2']);
    const after = Date.now() / 1000;
    expect(run).toEqual({ code: 0, stdout: 'out-line\n', stderr: 'err-line\n' });

    const [step] = (await client.getTask(taskId)).steps;
    expect(step).toMatchObject({ step: 1, command: "sh -c 'echo out-line; echo err-line >&2'", status: 'success', output: 'out-line\n', error: 'err-line\n', exit_code: 0 });
    expect(step.started_at).toBeGreaterThanOrEqual(Math.floor(before));
    expect(step.started_at).toBeLessThanOrEqual(after);
    expect(step.duration_ms).toBeGreaterThanOrEqual(0);

    // `show` displays the timing fields.
    const shown = await cli(['--socket', daemon.socketPath, 'show', taskId]);
    expect(shown.stdout).toMatch(/^ {5}logged .* \(seq \d+\); started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z, \d+(\.\d+)? m?s, exit 0$/m);
  });

  it('logs a failure with its stderr and exits with the command own code', async () => {
    const taskId = await newTask();
    const run = await exec(['--task', taskId, '--', 'sh', '-c', 'echo partial; echo "it broke" >&2; exit 3']);
    expect(run).toEqual({ code: 3, stdout: 'partial\n', stderr: 'it broke\n' });
    const [step] = (await client.getTask(taskId)).steps;
    expect(step).toMatchObject({ status: 'failed', output: 'partial\n', error: 'it broke\n', exit_code: 3 });
  });

  it('numbers steps after the ones already logged, unless --step says otherwise', async () => {
    const taskId = await newTask();
    await exec(['--task', taskId, '--', 'true']);
    await exec(['--task', taskId, '--', 'false']);
    await exec(['--task', taskId, '--step', '7', '--', 'true']);
    const steps = (await client.getTask(taskId)).steps;
    expect(steps.map((s) => [s.step, s.command, s.status, s.exit_code])).toEqual([
      [1, 'true', 'success', 0],
      [2, 'false', 'failed', 1],
      [7, 'true', 'success', 0],
    ]);
  });

  it('--new wraps the command in a one-step task, completed or failed by its exit code', async () => {
    const ok = await exec(['--new', 'list things', '--', 'echo', 'a b', "it's"]);
    expect(ok).toMatchObject({ code: 0, stdout: "a b it's\n" });
    const failed = await exec(['--new', 'fail on purpose', '--mode', 'step-by-step', '--', 'sh', '-c', 'exit 5']);
    expect(failed.code).toBe(5);

    const recent = await client.getRecent(2);
    const byDescription = (d: string) => recent.find((t) => t.description === d) as TaskView;
    const okTask = byDescription('list things');
    expect(okTask).toMatchObject({ status: 'completed', mode: 'autonomous', planned_steps: 1, plan: [{ command: "echo 'a b' 'it'\\''s'" }] });
    expect(okTask.steps).toHaveLength(1);
    expect(okTask.steps[0]).toMatchObject({ step: 1, command: "echo 'a b' 'it'\\''s'", status: 'success', output: "a b it's\n", exit_code: 0 });
    const failedTask = byDescription('fail on purpose');
    expect(failedTask).toMatchObject({ status: 'failed', mode: 'step-by-step' });
    expect(failedTask.steps[0]).toMatchObject({ status: 'failed', exit_code: 5 });
  });

  it('exits 128 + the signal number when the command is killed by a signal, and logs that code', async () => {
    const taskId = await newTask();
    const run = await exec(['--task', taskId, '--', 'sh', '-c', 'kill -TERM $$']);
    expect(run.code).toBe(143);
    expect((await client.getTask(taskId)).steps[0]).toMatchObject({ status: 'failed', exit_code: 143 });
  });

  it('exits 127 for a command that cannot be started, and logs it as failed', async () => {
    const taskId = await newTask();
    const run = await exec(['--task', taskId, '--', 'no-such-command-xyz', '--flag']);
    expect(run.code).toBe(127);
    expect(run.stderr).toBe("taskhistory: exec: cannot run 'no-such-command-xyz': command not found (ENOENT)\n");
    const [step] = (await client.getTask(taskId)).steps;
    expect(step).toMatchObject({ command: 'no-such-command-xyz --flag', status: 'failed', exit_code: 127 });
    expect(step.error).toContain("cannot run 'no-such-command-xyz'");
  });

  it('passes stdin to the command', async () => {
    const taskId = await newTask();
    const run = await exec(['--task', taskId, '--', 'cat'], 'from stdin\n');
    expect(run).toMatchObject({ code: 0, stdout: 'from stdin\n' });
    expect((await client.getTask(taskId)).steps[0].output).toBe('from stdin\n');
  });

  it('passes long output through whole but logs only its last 64 KiB, marked as cut', async () => {
    const taskId = await newTask();
    // 220,000 bytes: numbered lines, so the kept tail is recognisable.
    const script = 'for i in $(seq 1 20000); do printf "line %05d\\n" $i; done';
    const run = await exec(['--task', taskId, '--', 'sh', '-c', script]);
    expect(run.code).toBe(0);
    expect(run.stdout.length).toBe(220_000);
    const output = (await client.getTask(taskId)).steps[0].output as string;
    expect(Buffer.byteLength(output)).toBeLessThanOrEqual(DEFAULT_FIELD_CAP_BYTES);
    expect(output).toMatch(/^\[taskhistory exec: kept the last part of 220000 bytes\]\n/);
    expect(output.endsWith('line 20000\n')).toBe(true);
    expect(output).not.toContain('line 00001');
  });

  it('still runs the command and exits with its code when logging is refused', async () => {
    const run = await exec(['--task', 'task_1_000000', '--', 'sh', '-c', 'echo ran; exit 4']);
    expect(run.code).toBe(4);
    expect(run.stdout).toBe('ran\n');
    expect(run.stderr).toMatch(new RegExp(`^taskhistory: exec: nothing was logged: get_task refused by the daemon on ${daemon.socketPath}: .*\\(code 1001\\).*\\n$`));
  });

  it('refuses bad usage with exit 2 before running anything', async () => {
    const marker = join(tempDir(), 'ran');
    for (const args of [
      ['--', 'touch', marker],
      ['--task', 'x', '--new', 'y', '--', 'touch', marker],
      ['--new', 'y', '--step', '2', '--', 'touch', marker],
      ['--task', 'x'],
    ]) {
      const run = await exec(args);
      expect(run.code, args.join(' ')).toBe(2);
      expect(run.stderr, args.join(' ')).toMatch(/^taskhistory: [^\n]+\n$/);
    }
    expect(existsSync(marker)).toBe(false);
  });
});

describe('taskhistory exec with no daemon', () => {
  it('runs the command, says nothing was logged naming the socket, and exits with the command code', async () => {
    const dir = tempDir();
    const socket = join(dir, 'absent.sock');
    const marker = join(dir, 'ran');
    const run = await cli(['--socket', socket, 'exec', '--new', 'offline', '--', 'sh', '-c', `touch ${marker}; echo done; exit 6`]);
    expect(run.code).toBe(6);
    expect(run.stdout).toBe('done\n');
    expect(existsSync(marker)).toBe(true);
    expect(run.stderr).toBe(
      `taskhistory: exec: nothing was logged: no daemon answers on ${socket} (ENOENT); start one with 'taskhistoryd' or 'npm start', or pass --socket\n`,
    );

    const missing = await cli(['--socket', socket, 'exec', '--task', 'task_1_000000', '--', 'no-such-command-xyz']);
    expect(missing.code).toBe(127);
    expect(missing.stderr.split('\n')).toEqual([
      "taskhistory: exec: cannot run 'no-such-command-xyz': command not found (ENOENT)",
      expect.stringMatching(/^taskhistory: exec: nothing was logged: no daemon answers on /),
      '',
    ]);
  });
});
