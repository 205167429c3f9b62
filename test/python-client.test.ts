import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../protocol/errors.js';
import { resolveSocketPath } from '../protocol/paths.js';
import { openRawSocket, startDaemon } from './daemon-harness.js';
import { spawnTracked, tempDir, waitFor } from './processes.js';
import { PYTHON_CLIENT_DIR, PYTHON_TEST_DIR, lastJsonLine, runPython } from './python/run-python.js';

const script = (name: string) => join(PYTHON_TEST_DIR, name);

describe('Python client against the real daemon', () => {
  it('runs a whole task: create, steps with and without optional fields, complete, recent, to_dict', async () => {
    const daemon = await startDaemon();
    const run = await runPython([script('client_whole_task.py'), daemon.socketPath], [PYTHON_CLIENT_DIR]);
    expect(run.code, run.stderr).toBe(0);
    const out = lastJsonLine(run);

    expect(out.task_id).toMatch(/^task_\d+_[0-9a-f]{6}$/);
    expect(out.seqs).toEqual([2, 3, 4, 5]);
    expect(out.running_status).toBe('running');
    const task = out.task;
    expect(task).toMatchObject({
      task_id: out.task_id,
      description: 'Build, test and install',
      mode: 'approve-once',
      planned_steps: 3,
      status: 'completed',
      machine_id: 'test-machine',
      agent: 'python-test',
    });
    expect(typeof task.completed_at).toBe('number');
    const [first, second, third] = task.steps;
    expect(first).toMatchObject({ step: 1, command: 'make build', status: 'success', output: 'built ✓', started_at: 1700000000.25, duration_ms: 1234.5, exit_code: 0 });
    // An empty output is left out, as the original model did; error and recovery are kept.
    expect(second).toMatchObject({ step: 2, status: 'failed', error: '2 tests failed', recovery: 're-ran with -j1', exit_code: 2 });
    expect(second).not.toHaveProperty('output');
    expect(Object.keys(third).filter((k) => ['output', 'error', 'recovery', 'started_at', 'duration_ms', 'exit_code'].includes(k))).toEqual([]);

    expect(out.recent.map((t: any) => t.task_id)).toEqual([out.task_id]);
    expect(out.recent_one).toEqual([task]);
    expect(out.dict).toEqual({ tasks: [task], count: 1, max_tasks: 100 });
    expect(out.tasks_property).toEqual([task]);
    expect(out.max_tasks_property).toBe(100);
    expect(out.machine_id_property).toBe('test-machine');
    expect(out.status).toMatchObject({ machine_id: 'test-machine', last_seq: 5, running_tasks: 0 });
    expect(out.verify).toMatchObject({ ok: true, first_bad_seq: null });

    // The daemon, asked over WebSocket, holds exactly what the Python client was told.
    const raw = await openRawSocket(daemon.socketPath);
    expect(await raw.call('get_task', { task_id: out.task_id })).toEqual(task);
    raw.close();
  });

  it('subscribe delivers every event in commit order, and a task_id filter keeps only that task', async () => {
    const daemon = await startDaemon();
    const run = await runPython([script('client_subscribe.py'), daemon.socketPath], [PYTHON_CLIENT_DIR]);
    expect(run.code, run.stderr).toBe(0);
    const { watched_id, other_id, everything, only_watched } = lastJsonLine(run);

    const summary = (events: any[]) => events.map((e) => [e.type, e.task_id]);
    expect(summary(everything)).toEqual([
      ['task_created', watched_id],
      ['task_created', other_id],
      ['step_logged', watched_id],
      ['step_logged', other_id],
      ['step_logged', watched_id],
      ['task_completed', other_id],
      ['task_completed', watched_id],
    ]);
    expect(everything.map((e: any) => e.seq)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(everything[2].record).toMatchObject({ seq: 3, step: 1, command: 'echo one', output: 'one' });
    // Subscribed after the watched task was created: its later records only.
    expect(summary(only_watched)).toEqual([
      ['step_logged', watched_id],
      ['step_logged', watched_id],
      ['task_completed', watched_id],
    ]);
    expect(only_watched.map((e: any) => e.seq)).toEqual([3, 5, 7]);
  });

  it('raises TaskHistoryError with the daemon codes, and DaemonUnavailableError naming the socket', async () => {
    const daemon = await startDaemon();
    const dir = tempDir();
    const missing = join(dir, 'nobody-home.sock');
    const stale = join(dir, 'stale.sock');
    const run = await runPython([script('client_errors.py'), daemon.socketPath, missing, stale], [PYTHON_CLIENT_DIR]);
    expect(run.code, run.stderr).toBe(0);
    const out = lastJsonLine(run);

    const codeOf = (name: string) => [out[name][0], out[name][1]];
    expect(codeOf('log_step unknown task')).toEqual(['TaskHistoryError', ErrorCodes.TaskNotFound]);
    expect(codeOf('complete unknown task')).toEqual(['TaskHistoryError', ErrorCodes.TaskNotFound]);
    expect(codeOf('get unknown task')).toEqual(['TaskHistoryError', ErrorCodes.TaskNotFound]);
    expect(codeOf('complete twice')).toEqual(['TaskHistoryError', ErrorCodes.TaskFinished]);
    expect(codeOf('log_step after completion')).toEqual(['TaskHistoryError', ErrorCodes.TaskFinished]);
    expect(codeOf('bad mode')).toEqual(['TaskHistoryError', ErrorCodes.InvalidParams]);
    expect(codeOf('empty description')).toEqual(['TaskHistoryError', ErrorCodes.InvalidParams]);
    expect(out['still usable after errors']).toBeNull();

    expect(out['no daemon'][0]).toBe('DaemonUnavailableError');
    expect(out['no daemon'][2]).toContain(missing);
    expect(out['stale socket'][0]).toBe('DaemonUnavailableError');
    expect(out['stale socket'][2]).toContain(stale);
  });

  it('reconnects once when the daemon restarted between two calls', async () => {
    const first = await startDaemon();
    const child = spawnTracked('python3', [script('client_reconnect.py'), first.socketPath], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, PYTHONPATH: PYTHON_CLIENT_DIR, PYTHONDONTWRITEBYTECODE: '1' },
    });
    const { ready } = JSON.parse(await waitFor(() => child.stdout().split('\n')[0].trim(), 15_000, 'python client ready'));
    expect((await first.stop()).code).toBe(0);
    await startDaemon({ dataDir: first.dataDir, socketPath: first.socketPath });
    child.proc.stdin!.end('go\n');
    expect((await child.exited).code, child.stderr()).toBe(0);

    const out = JSON.parse(child.stdout().trim().split('\n')[1]);
    expect(out.task_id).toBe(ready);
    expect(out.seq).toBe(2);
    expect(out.task).toMatchObject({ status: 'completed', steps: [{ step: 1, command: 'after restart' }] });
  });

  it('says a call that timed out may have been recorded and how to check; it was recorded', async () => {
    const daemon = await startDaemon();
    const run = await runPython([script('client_timeout.py'), daemon.socketPath, String(daemon.pid)], [PYTHON_CLIENT_DIR]);
    expect(run.code, run.stderr).toBe(0);
    const out = lastJsonLine(run);
    expect(out.error_type).toBe('CallTimeoutError');
    expect(out.is_unavailable).toBe(true);
    expect(out.message).toBe(
      `the daemon on socket ${daemon.socketPath} did not answer log_step within 0.5 s; it may have been recorded: check with get_task("${out.task_id}") or \`taskhistory show ${out.task_id}\` before retrying`,
    );
    expect(out.commands).toEqual(['sent while the daemon was stopped']);
  });

  it('resolves the default socket exactly as protocol/paths.ts does', async () => {
    const cases: { env: Record<string, string>; uid: number }[] = [
      { env: { TASKHISTORY_SOCKET: '/srv/th.sock', XDG_RUNTIME_DIR: '/run/user/1000' }, uid: 1000 },
      { env: {}, uid: 0 },
      { env: { XDG_RUNTIME_DIR: '/run/user/1000' }, uid: 0 },
      { env: { XDG_RUNTIME_DIR: '/run/user/1000' }, uid: 1000 },
      { env: {}, uid: 1234 },
    ];
    const code = [
      'import json, os, sys, taskhistory',
      'out = []',
      'for case in json.loads(sys.argv[1]):',
      '    for name in ("TASKHISTORY_SOCKET", "XDG_RUNTIME_DIR"): os.environ.pop(name, None)',
      '    os.environ.update(case["env"])',
      '    taskhistory.os.getuid = lambda uid=case["uid"]: uid',
      '    out.append([taskhistory.resolve_socket_path(), taskhistory.resolve_socket_path("/explicit.sock")])',
      'print(json.dumps(out))',
    ].join('\n');
    const run = await runPython(['-c', code, JSON.stringify(cases)], [PYTHON_CLIENT_DIR]);
    expect(run.code, run.stderr).toBe(0);
    const expected = cases.map(({ env, uid }) => [
      resolveSocketPath(undefined, { env, uid, home: '/home/someone' }),
      resolveSocketPath('/explicit.sock', { env, uid, home: '/home/someone' }),
    ]);
    expect(lastJsonLine(run)).toEqual(expected);
  });

  it('is Python 3.9 syntax and standard library only', async () => {
    const code = [
      'import ast, sys',
      'tree = ast.parse(open(sys.argv[1]).read(), feature_version=(3, 9))',
      'names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}',
      'names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}',
      'print(sorted(names - set(sys.stdlib_module_names)))',
    ].join('\n');
    const run = await runPython(['-c', code, join(PYTHON_CLIENT_DIR, 'taskhistory.py')], []);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout.trim()).toBe('[]');
  });
});
