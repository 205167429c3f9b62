import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openRawSocket, startDaemon } from './daemon-harness.js';
import { tempDir } from './processes.js';
import { PYTHON_CLIENT_DIR, PYTHON_TEST_DIR, lastJsonLine, runPython } from './python/run-python.js';

const ORIGINAL_IMPORT = 'from original_task_history import TaskHistory';
const DAEMON_IMPORT = 'from taskhistory import TaskHistory';

describe('compatibility with the original Python TaskHistory model', () => {
  it("the original model's from_dict reads back the tasks the daemon logged", async () => {
    const daemon = await startDaemon();
    const raw = await openRawSocket(daemon.socketPath);
    const done = await raw.call('create_task', { description: 'Rotate logs', mode: 'autonomous', steps: [{ cmd: 'logrotate' }, { cmd: 'ls' }] });
    await raw.call('log_step', { task_id: done.task_id, step_num: 1, command: 'logrotate -f /etc/logrotate.conf', status: 'failed', error: 'permission denied' });
    await raw.call('log_step', { task_id: done.task_id, step_num: 1, command: 'sudo logrotate -f /etc/logrotate.conf', status: 'success', output: 'rotated ✓' });
    await raw.call('complete_task', { task_id: done.task_id, final_status: 'completed' });
    const running = await raw.call('create_task', { description: 'Still going', mode: 'step-by-step', steps: [] });
    await raw.call('log_step', { task_id: running.task_id, step_num: 1, command: 'uptime', status: 'success' });
    raw.close();
    expect((await daemon.stop('SIGTERM')).code).toBe(0);

    const run = await runPython([join(PYTHON_TEST_DIR, 'load_with_original.py'), daemon.dataFile], [PYTHON_TEST_DIR]);
    expect(run.code, run.stderr).toBe(0);
    expect(lastJsonLine(run)).toEqual({
      max_tasks: 100,
      tasks: [
        {
          task_id: done.task_id,
          status: 'completed',
          planned_steps: 2,
          steps: [
            [1, 'logrotate -f /etc/logrotate.conf', 'failed', null, 'permission denied'],
            [1, 'sudo logrotate -f /etc/logrotate.conf', 'success', 'rotated ✓', null],
          ],
        },
        { task_id: running.task_id, status: 'running', planned_steps: 0, steps: [[1, 'uptime', 'success', null, null]] },
        { task_id: expect.stringMatching(/^task_\d+_[0-9a-f]{6}$/), status: 'running', planned_steps: 0, steps: [] },
      ],
      recent_ids: [running.task_id, expect.any(String)],
      count_after_adding: 3,
    });
  });

  it("the client's from_dict gives a read-only snapshot of the same file", async () => {
    const daemon = await startDaemon();
    const raw = await openRawSocket(daemon.socketPath);
    const task = await raw.call('create_task', { description: 'Snapshot me', mode: 'autonomous', steps: [] });
    raw.close();
    expect((await daemon.stop('SIGTERM')).code).toBe(0);

    const code = [
      'import json, sys',
      'from taskhistory import TaskHistory, TaskHistoryError',
      'snapshot = TaskHistory.from_dict(json.load(open(sys.argv[1])))',
      'try:',
      '    snapshot.create_task("x", "autonomous", [])',
      '    refused = None',
      'except TaskHistoryError as error:',
      '    refused = str(error)',
      'print(json.dumps({"recent": [t["task_id"] for t in snapshot.get_recent()], "dict": snapshot.to_dict()["count"], "max_tasks": snapshot.max_tasks, "refused": refused}))',
    ].join('\n');
    const run = await runPython(['-c', code, daemon.dataFile], [PYTHON_CLIENT_DIR]);
    expect(run.code, run.stderr).toBe(0);
    const out = lastJsonLine(run);
    expect(out).toMatchObject({ recent: [task.task_id], dict: 1, max_tasks: 100 });
    expect(out.refused).toMatch(/read-only/);
  });

  it('an agent written for the original model runs unchanged on the daemon after a one-import switch', async () => {
    const agentPath = join(PYTHON_TEST_DIR, 'agent_example.py');
    const agentSource = readFileSync(agentPath, 'utf8');
    const switchedSource = agentSource.replace(ORIGINAL_IMPORT, DAEMON_IMPORT);
    const changedLines = agentSource.split('\n').filter((line, i) => line !== switchedSource.split('\n')[i]);
    expect(changedLines).toEqual([ORIGINAL_IMPORT]);
    const switchedPath = join(tempDir('agent-'), 'agent_example.py');
    writeFileSync(switchedPath, switchedSource);

    const original = await runPython([agentPath], [PYTHON_TEST_DIR]);
    expect(original.code, original.stderr).toBe(0);

    const daemon = await startDaemon();
    // Only the client is importable, and the socket comes from the environment, as for a real agent.
    const switched = await runPython([switchedPath], [PYTHON_CLIENT_DIR], { TASKHISTORY_SOCKET: daemon.socketPath });
    expect(switched.code, switched.stderr).toBe(0);

    const { ids, ...onDaemon } = lastJsonLine(switched);
    const { ids: _originalIds, ...inMemory } = lastJsonLine(original);
    expect(onDaemon).toEqual(inMemory);
    expect(inMemory.all.map((t: any) => t.status)).toEqual(['completed', 'aborted', 'running']);

    // And the daemon holds what the agent logged.
    const raw = await openRawSocket(daemon.socketPath);
    const dict = await raw.call('to_dict', {});
    raw.close();
    expect(dict.tasks.map((t: any) => t.task_id)).toEqual(ids);
    expect(dict.tasks[0].steps.map((s: any) => s.command)).toEqual(['ls -la', 'cat config.yml', 'sudo cat config.yml']);
  });
});
