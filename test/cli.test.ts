import { accessSync, constants, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TaskHistoryClient } from '../client/sdk.js';
import { journalSegmentName } from '../protocol/data-file.js';
import { CLI_BIN, CLOUD_BIN, REPO, runCli, startDaemon, type CliRun, type Daemon } from './daemon-harness.js';
import { spawnTracked, tempDir, waitFor, freePort } from './processes.js';

const cli = (args: string[], env: NodeJS.ProcessEnv = {}) => runCli(args, { env });

const TASK_ID = /^task_\d+_[0-9a-f]{6}$/;

describe('installed commands', () => {
  it('every bin in package.json is an executable file, as npx and npm install -g run them', () => {
    const { bin } = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { bin: Record<string, string> };
    expect(Object.keys(bin).sort()).toEqual(['taskhistory', 'taskhistory-cloud', 'taskhistoryd']);
    for (const path of Object.values(bin)) {
      expect(() => accessSync(join(REPO, path), constants.X_OK), path).not.toThrow();
      // `env -S` passes node's own flags (the daemon's and the CLI's young generation size) from the `#!` line.
      expect(readFileSync(join(REPO, path), 'utf8'), path).toMatch(/^#!\/usr\/bin\/env (node|-S node( --[a-z-]+=\d+)+)\n/);
    }
  });
});

describe('taskhistory CLI against the real daemon', () => {
  let daemon: Daemon;
  let on: (...args: string[]) => Promise<CliRun>;

  beforeAll(async () => {
    daemon = await startDaemon();
    on = (...args) => cli(['--socket', daemon.socketPath, ...args]);
  });

  it('create prints the task_id alone; step and complete print the seq; show displays everything', async () => {
    const created = await on('create', '--description', 'deploy the site', '--mode', 'approve-once', '--step', 'make', '--step', 'make deploy', '--agent', 'cli-test');
    expect(created.code, created.stderr).toBe(0);
    expect(created.stdout).toMatch(/^task_\d+_[0-9a-f]{6}\n$/);
    const taskId = created.stdout.trim();

    const first = await on('step', taskId, '--num', '1', '--command', 'make', '--status', 'success', '--output', 'built ok\nline two', '--exit-code', '0', '--duration-ms', '1500', '--started-at', '1700000000.5');
    expect(first).toMatchObject({ code: 0, stdout: 'seq 2\n' });
    const second = await on('step', taskId, '--num', '2', '--command', 'make deploy', '--status', 'failed', '--error', 'permission denied', '--recovery', 'asked for access', '--exit-code', '2');
    expect(second).toMatchObject({ code: 0, stdout: 'seq 3\n' });
    const completed = await on('complete', taskId, '--status', 'failed');
    expect(completed).toMatchObject({ code: 0, stdout: 'seq 4\n' });

    const shown = await on('show', taskId);
    expect(shown.code, shown.stderr).toBe(0);
    const text = shown.stdout;
    expect(text).toMatch(new RegExp(`^task +${taskId}$`, 'm'));
    expect(text).toMatch(/^status +failed$/m);
    expect(text).toMatch(/^description +deploy the site$/m);
    expect(text).toMatch(/^mode +approve-once$/m);
    expect(text).toMatch(/^agent +cli-test$/m);
    expect(text).toContain('  1. {"command":"make"}');
    expect(text).toContain('  1. [success] make\n');
    expect(text).toContain('(seq 2); started 2023-11-14 22:13:20.500Z, 1.50 s, exit 0');
    expect(text).toContain('     output:\n       built ok\n       line two\n');
    expect(text).toContain('  2. [failed] make deploy\n');
    expect(text).toContain('(seq 3); exit 2');
    expect(text).toContain('     error:\n       permission denied\n');
    expect(text).toContain('     recovery:\n       asked for access\n');

    const json = JSON.parse((await on('--json', 'show', taskId)).stdout);
    expect(json).toMatchObject({ task_id: taskId, status: 'failed', agent: 'cli-test', planned_steps: 2, plan: [{ command: 'make' }, { command: 'make deploy' }] });
    expect(json.steps[0]).toMatchObject({ step: 1, output: 'built ok\nline two', exit_code: 0, duration_ms: 1500, started_at: 1700000000.5 });
  });

  it('--json gives scripts the method results, and export is the to_dict JSON', async () => {
    const created = await on('create', '--json', '--description', 'json task', '--mode', 'autonomous', '--steps', '[{"command":"ls","why":"look"}]');
    expect(created.code, created.stderr).toBe(0);
    const { task_id, seq } = JSON.parse(created.stdout);
    expect(task_id).toMatch(TASK_ID);
    expect(Number.isSafeInteger(seq)).toBe(true);
    expect(JSON.parse((await on('--json', 'step', task_id, '--num', '1', '--command', 'ls', '--status', 'success')).stdout)).toEqual({ seq: seq + 1 });

    const status = JSON.parse((await on('status', '--json')).stdout);
    expect(status).toMatchObject({ machine_id: 'test-machine', socket: daemon.socketPath, last_seq: seq + 1 });
    const recent = JSON.parse((await on('recent', '--json', '-n', '1')).stdout);
    expect(recent.map((t: { task_id: string }) => t.task_id)).toEqual([task_id]);

    const exported = await on('export');
    expect(exported.code).toBe(0);
    const client = await TaskHistoryClient.connect({ socketPath: daemon.socketPath });
    expect(JSON.parse(exported.stdout)).toEqual(await client.toDict());
    await client.close();
  });

  it('status and recent are readable', async () => {
    const running = (await on('create', '--description', 'still going', '--mode', 'autonomous')).stdout.trim();
    const status = await on('status');
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(/^machine +test-machine$/m);
    expect(status.stdout).toMatch(new RegExp(`^socket +${daemon.socketPath}$`, 'm'));
    expect(status.stdout).toMatch(new RegExp(`^data file +${daemon.dataFile} \\(checkpoint at seq \\d+\\)$`, 'm'));
    expect(status.stdout).toMatch(/^head +seq \d+, hash [0-9a-f]{64}$/m);
    expect(status.stdout).toMatch(/^tamper +none detected$/m);
    expect(status.stdout).toMatch(/^cloud +disabled$/m);
    expect(status.stdout).toMatch(new RegExp(`^  running ${running}: 0 steps, for \\d+s: still going$`, 'm'));

    const recent = await on('recent', '-n', '2');
    const lines = recent.stdout.trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatch(new RegExp(`^${running}  \\d{4}-\\d\\d-\\d\\d .*  running +0/0 steps +still going$`));
  });

  it('reports daemon errors on one stderr line with exit 1, and usage errors with exit 2', async () => {
    const missing = await on('show', 'task_1_000000');
    expect(missing.code).toBe(1);
    expect(missing.stdout).toBe('');
    expect(missing.stderr).toMatch(/^taskhistory: get_task refused: [^\n]*task_1_000000[^\n]* \(code 1001\)[^\n]*\n$/);

    const taskId = (await on('create', '--description', 'twice', '--mode', 'autonomous')).stdout.trim();
    expect((await on('complete', taskId, '--status', 'completed')).code).toBe(0);
    const again = await on('complete', taskId, '--status', 'aborted');
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^taskhistory: complete_task refused: .*\(code 1002\).*\n$/);

    for (const args of [
      ['step', taskId, '--command', 'x', '--status', 'success'],
      ['step', taskId, '--num', 'one', '--command', 'x', '--status', 'success'],
      ['step', taskId, '--num', '1', '--command', 'x', '--status', 'maybe'],
      ['create', '--description', 'x', '--mode', 'sometimes'],
      ['create', '--description', 'x', '--mode', 'autonomous', '--steps', 'not json'],
      ['create', '--description', 'x', '--mode', 'autonomous', '--steps', '[]', '--step', 'ls'],
      ['show'],
      ['no-such-command'],
    ]) {
      const run = await on(...args);
      expect(run.code, args.join(' ')).toBe(2);
      expect(run.stderr, args.join(' ')).toMatch(/^taskhistory: [^\n]+\n$/);
    }
  });

  it('verify asks the daemon and prints ok with the head seq', async () => {
    const { last_seq } = JSON.parse((await on('status', '--json')).stdout);
    const verified = await on('verify');
    expect(verified.code, verified.stderr).toBe(0);
    expect(verified.stdout).toMatch(new RegExp(`^ok: \\d+ records verified, head seq ${last_seq}\\n$`));
    expect(JSON.parse((await on('verify', '--json')).stdout)).toMatchObject({ ok: true, first_bad_seq: null });
  });

  it('redaction-rules lists the daemon rules', async () => {
    const rules = await on('redaction-rules');
    expect(rules.code, rules.stderr).toBe(0);
    expect(rules.stdout).toMatch(/^redaction on\n/);
    expect(rules.stdout).toMatch(/^aws-access-key-id +builtin +\S/m);
    expect(JSON.parse((await on('redaction-rules', '--json')).stdout)).toMatchObject({ enabled: true });
  });
});

describe('taskhistory tail', () => {
  let daemon: Daemon;
  let client: TaskHistoryClient;
  beforeAll(async () => {
    daemon = await startDaemon();
    client = await TaskHistoryClient.connect({ socketPath: daemon.socketPath });
  });
  afterAll(async () => client?.close());

  it('prints the newest records, one a line, with step timing', async () => {
    const { task_id } = await client.createTask({ description: 'tail me', mode: 'autonomous', steps: [] });
    await client.logStep({ task_id, step_num: 1, command: 'make', status: 'success', duration_ms: 250, exit_code: 0 });
    await client.logStep({ task_id, step_num: 2, command: 'make test', status: 'failed', exit_code: 2 });
    await client.completeTask({ task_id, final_status: 'failed' });

    const all = await cli(['--socket', daemon.socketPath, 'tail']);
    expect(all.code, all.stderr).toBe(0);
    const lines = all.stdout.replace(/\n$/, '').split('\n');
    expect(lines).toHaveLength(4);
    expect(lines[0]).toMatch(new RegExp(`^ +1  \\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z  task_created +${task_id}  running  \\[uid 0 pid \\d+ [^\\]]+\\]: tail me$`));
    expect(lines[1]).toMatch(new RegExp(`^ +2  .*  step_logged +${task_id}  step 1  success  250 ms  exit 0  \\[uid 0 pid \\d+ [^\\]]+\\]: make$`));
    expect(lines[2]).toMatch(new RegExp(`^ +3  .*  step_logged +${task_id}  step 2  failed  exit 2  \\[uid 0 pid \\d+ [^\\]]+\\]: make test$`));
    expect(lines[3]).toMatch(new RegExp(`task_completed +${task_id}  failed$`));

    const lastTwo = await cli(['--socket', daemon.socketPath, 'tail', '-n', '2']);
    expect(lastTwo.stdout).toBe(`${lines.slice(2).join('\n')}\n`);
  });

  it('-f follows new records live, and --task keeps only that task', async () => {
    const watched = await client.createTask({ description: 'watched', mode: 'autonomous', steps: [] });
    const follower = spawnTracked(process.execPath, [CLI_BIN, '--socket', daemon.socketPath, '--json', 'tail', '-f', '-n', '1']);
    const taskFollower = spawnTracked(process.execPath, [CLI_BIN, '--socket', daemon.socketPath, 'tail', '-f', '--task', watched.task_id]);
    // The newest past record is printed first: the follower is subscribed by then.
    await waitFor(() => follower.stdout().includes(watched.task_id), 10_000, 'tail -f history');
    await waitFor(() => taskFollower.stdout().includes('watched'), 10_000, 'tail -f --task history');

    const other = await client.createTask({ description: 'other', mode: 'autonomous', steps: [] });
    const step = await client.logStep({ task_id: watched.task_id, step_num: 1, command: 'echo live', status: 'success', duration_ms: 12, exit_code: 0 });
    const done = await client.completeTask({ task_id: watched.task_id, final_status: 'completed' });

    await waitFor(() => follower.stdout().includes(`"seq":${done.seq}`), 10_000, 'the live completion in tail -f');
    const entries = follower.stdout().trim().split('\n').map((line) => JSON.parse(line));
    expect(entries.map((e) => [e.seq, e.type, e.task_id])).toEqual([
      [watched.seq, 'task_created', watched.task_id],
      [other.seq, 'task_created', other.task_id],
      [step.seq, 'step_logged', watched.task_id],
      [done.seq, 'task_completed', watched.task_id],
    ]);
    expect(entries[2]).toMatchObject({ step: 1, status: 'success', duration_ms: 12, exit_code: 0, text: 'echo live' });

    await waitFor(() => taskFollower.stdout().includes('task_completed'), 10_000, 'the live completion in tail -f --task');
    const taskLines = taskFollower.stdout().replace(/\n$/, '').split('\n');
    expect(taskLines).toHaveLength(3);
    expect(taskLines[1]).toMatch(new RegExp(`^ +${step.seq}  .*  step_logged +${watched.task_id}  step 1  success  12 ms  exit 0  \\[uid 0 pid \\d+ [^\\]]+\\]: echo live$`));
    expect(taskFollower.stdout()).not.toContain(other.task_id);

    process.kill(follower.pid, 'SIGINT');
    expect((await follower.exited).code).toBe(0);
    process.kill(taskFollower.pid, 'SIGTERM');
    await taskFollower.exited;
  });

  it('-f exits 3 with a message when the daemon goes away', async () => {
    const own = await startDaemon();
    const ownClient = await TaskHistoryClient.connect({ socketPath: own.socketPath });
    const { task_id } = await ownClient.createTask({ description: 'before the end', mode: 'autonomous', steps: [] });
    await ownClient.close();
    const follower = spawnTracked(process.execPath, [CLI_BIN, '--socket', own.socketPath, 'tail', '-f']);
    // History printed means the follower is subscribed and following.
    await waitFor(() => follower.stdout().includes(task_id), 10_000, 'tail -f history');
    await own.stop();
    const { code } = await follower.exited;
    expect(code).toBe(3);
    expect(follower.stderr()).toMatch(new RegExp(`^taskhistory: the connection to the daemon on ${own.socketPath} closed.*\n$`));
  });
});

describe('taskhistory with no daemon', () => {
  it('every daemon command exits 3 naming the socket and how to start a daemon', async () => {
    const socket = join(tempDir(), 'absent.sock');
    const message = `taskhistory: no daemon answers on ${socket} (ENOENT); start one with 'taskhistoryd' or 'npm start', or pass --socket\n`;
    for (const args of [
      ['status'],
      ['recent'],
      ['show', 'task_1_000000'],
      ['export'],
      ['tail'],
      ['verify'],
      ['create', '--description', 'x', '--mode', 'autonomous'],
      ['step', 'task_1_000000', '--num', '1', '--command', 'x', '--status', 'success'],
      ['complete', 'task_1_000000', '--status', 'completed'],
    ]) {
      const run = await cli(['--socket', socket, ...args]);
      expect(run.code, args[0]).toBe(3);
      expect(run.stderr, args[0]).toBe(message);
      expect(run.stdout, args[0]).toBe('');
    }
    // TASKHISTORY_SOCKET is the socket when --socket is not given.
    const fromEnv = await cli(['status'], { TASKHISTORY_SOCKET: socket });
    expect(fromEnv).toMatchObject({ code: 3, stderr: message });
  });

  it('redaction-rules lists the built-in rules and says no daemon answered', async () => {
    const socket = join(tempDir(), 'absent.sock');
    const run = await cli(['--socket', socket, 'redaction-rules']);
    expect(run.code).toBe(0);
    expect(run.stderr).toContain(`no daemon answers on ${socket}`);
    expect(run.stdout).toMatch(/^aws-access-key-id +builtin +\S/m);
    expect(run.stdout).not.toContain('redaction on');
  });
});

describe('taskhistory when the daemon does not answer in time', () => {
  it('says the write may have been recorded and how to check, with exit 3', async () => {
    // A fake daemon that accepts the WebSocket and never answers.
    const socket = join(tempDir(), 'silent.sock');
    const silent = spawnTracked(process.execPath, [join(REPO, 'test/fixtures/fake-endpoint.mjs'), '--answer', 'never', '--socket', socket]);
    await waitFor(() => silent.stderr().includes('listening'), 15_000, 'the silent daemon to listen');
    const taskId = 'task_1700000000_abcdef';
    const on = (...args: string[]) => cli(['--socket', socket, '--timeout-ms', '300', ...args]);

    const step = await on('step', taskId, '--num', '1', '--command', 'make', '--status', 'success');
    expect(step.code).toBe(3);
    expect(step.stderr).toBe(
      `taskhistory: the daemon on ${socket} did not answer log_step within 300 ms; it may have been recorded: check with get_task("${taskId}") or \`taskhistory show ${taskId}\` before retrying\n`,
    );
    const create = await on('create', '--description', 'd', '--mode', 'autonomous');
    expect(create.code).toBe(3);
    expect(create.stderr).toContain('did not answer create_task within 300 ms; the task may have been created: check with get_recent() or `taskhistory recent`');
    // exec does not claim that nothing was logged.
    const exec = await on('exec', '--task', taskId, '--step', '2', '--', 'true');
    expect(exec.code).toBe(0);
    expect(exec.stderr).toBe(
      `taskhistory: exec: the daemon on ${socket} did not answer log_step within 300 ms; it may have been recorded: check with get_task("${taskId}") or \`taskhistory show ${taskId}\` before retrying\n`,
    );
    expect(silent.stdout().split('\n').filter(Boolean)).toEqual(['log_step', 'create_task', 'log_step']);
  });
});

describe('taskhistory verify FILE, offline', () => {
  /** Replaces one character of `needle`'s occurrence after `after` in the file. */
  function changeOneCharacter(file: string, after: string, needle: string): void {
    const text = readFileSync(file, 'utf8');
    const at = text.indexOf(needle, text.indexOf(after));
    expect(at, `${needle} after ${after} in ${file}`).toBeGreaterThan(-1);
    writeFileSync(file, text.slice(0, at) + 'X' + text.slice(at + 1));
  }

  async function loggedDaemon(): Promise<{ daemon: Daemon; taskId: string; targetSeq: number; lastSeq: number }> {
    const daemon = await startDaemon();
    const client = await TaskHistoryClient.connect({ socketPath: daemon.socketPath });
    const { task_id } = await client.createTask({ description: 'verify me', mode: 'autonomous', steps: [] });
    await client.logStep({ task_id, step_num: 1, command: 'first', status: 'success', output: 'plain output' });
    const target = await client.logStep({ task_id, step_num: 2, command: 'second', status: 'success', output: 'target-output' });
    const last = await client.completeTask({ task_id, final_status: 'completed' });
    await client.close();
    return { daemon, taskId: task_id, targetSeq: target.seq, lastSeq: last.seq };
  }

  it('verifies a stopped daemon\'s file, and names the seq of a changed character in a record or in the task view', async () => {
    const { daemon, targetSeq, lastSeq } = await loggedDaemon();
    expect((await daemon.stop()).code).toBe(0);
    const good = await cli(['verify', daemon.dataFile]);
    expect(good.code, good.stderr).toBe(0);
    expect(good.stdout).toBe(`ok: ${lastSeq} records verified, head seq ${lastSeq}\n`);

    const original = readFileSync(daemon.dataFile, 'utf8');
    changeOneCharacter(daemon.dataFile, '"chain"', 'target-output');
    const inRecord = await cli(['verify', daemon.dataFile]);
    expect(inRecord.code).toBe(1);
    expect(inRecord.stdout).toMatch(new RegExp(`^FAILED at seq ${targetSeq}: changed content \\(.+\\)\\n$`));
    expect(JSON.parse((await cli(['--json', 'verify', daemon.dataFile])).stdout)).toMatchObject({ ok: false, first_bad_seq: targetSeq, reason: 'changed content' });

    writeFileSync(daemon.dataFile, original);
    changeOneCharacter(daemon.dataFile, '"tasks"', 'target-output');
    const inView = await cli(['verify', daemon.dataFile]);
    expect(inView.code).toBe(1);
    expect(inView.stdout).toMatch(new RegExp(`^FAILED at seq ${targetSeq}: changed content`));
  });

  it('reads the journal beside the file: records not yet checkpointed count, and a change there is caught', async () => {
    const { daemon } = await loggedDaemon();
    expect((await daemon.stop()).code).toBe(0);
    // Restart on the same data, log more, and kill -9 before any checkpoint can cover it.
    const again = await startDaemon({ dataDir: daemon.dataDir });
    const client = await TaskHistoryClient.connect({ socketPath: again.socketPath });
    const { task_id } = await client.createTask({ description: 'after restart', mode: 'autonomous', steps: [] });
    const journalled = await client.logStep({ task_id, step_num: 1, command: 'journalled-command', status: 'success' });
    await again.stop('SIGKILL');
    await client.close();
    const segments = readdirSync(daemon.dataDir).filter((name) => name.startsWith('task_history.journal.'));
    const journalText = segments.map((name) => readFileSync(join(daemon.dataDir, name), 'utf8')).join('');
    expect(journalText, 'the step must be in the journal for this test to mean anything').toContain('journalled-command');
    expect(readFileSync(daemon.dataFile, 'utf8')).not.toContain('journalled-command');

    const good = await cli(['verify', daemon.dataFile]);
    expect(good.code, good.stdout + good.stderr).toBe(0);
    expect(good.stdout).toMatch(new RegExp(`head seq ${journalled.seq}\\n$`));

    const segment = segments.find((name) => readFileSync(join(daemon.dataDir, name), 'utf8').includes('journalled-command')) as string;
    expect(segment).toMatch(/^task_history\.journal\.\d{12}\.jsonl$/);
    expect(journalSegmentName(Number(segment.split('.')[2]))).toBe(segment);
    changeOneCharacter(join(daemon.dataDir, segment), '"step_logged"', 'journalled-command');
    const broken = await cli(['verify', daemon.dataFile]);
    expect(broken.code).toBe(1);
    expect(broken.stdout).toMatch(new RegExp(`^FAILED at seq ${journalled.seq}: changed content`));
  });

  it('exits 2 when the file cannot be read', async () => {
    const missing = join(tempDir(), 'task_history.json');
    const run = await cli(['verify', missing]);
    expect(run.code).toBe(2);
    expect(run.stdout).toMatch(/^FAILED: unreadable file \(.*task_history\.json.*\)\n$/);
  });
});

describe('taskhistory pull', () => {
  it("fetches a machine's task_history.json from the real cloud endpoint", async () => {
    const dir = tempDir();
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, 'machine-token-0123456789\n', { mode: 0o600 });
    writeFileSync(join(dir, 'tokens.json'), JSON.stringify({ tokens: [{ token: 'machine-token-0123456789', machine_id: 'test-machine' }] }), { mode: 0o600 });
    const cloud = spawnTracked(process.execPath, [CLOUD_BIN, '--port', '0', '--data-dir', join(dir, 'cloud'), '--tokens-file', join(dir, 'tokens.json')]);
    const httpUrl = (await waitFor(() => /url=(\S+)/.exec(cloud.stderr())?.[1], 15_000, 'the cloud endpoint to listen')).replace(/^ws/, 'http');
    const origin = new URL(httpUrl).origin;
    const daemon = await startDaemon({ args: ['--cloud-url', `ws://${new URL(httpUrl).host}/v1/sync`, '--cloud-token-file', tokenFile] });
    const client = await TaskHistoryClient.connect({ socketPath: daemon.socketPath });
    const { task_id, seq } = await client.createTask({ description: 'synced', mode: 'autonomous', steps: [] });
    await waitFor(async () => (await client.status()).cloud.acked_seq >= seq, 15_000, 'the cloud to acknowledge');
    await client.close();

    const pulled = await cli(['pull', '--machine', 'test-machine', '--cloud-url', origin, '--token-file', tokenFile, '--max-tasks', '5']);
    expect(pulled.code, pulled.stderr).toBe(0);
    const dict = JSON.parse(pulled.stdout);
    expect(dict).toMatchObject({ count: 1, max_tasks: 5 });
    expect(dict.tasks[0]).toMatchObject({ task_id, description: 'synced' });

    const wrongMachine = await cli(['pull', '--machine', 'someone-else', '--cloud-url', origin, '--token-file', tokenFile]);
    expect(wrongMachine.code).toBe(1);
    expect(wrongMachine.stderr).toMatch(/^taskhistory: pull: .* answered 403 .*\n$/);
  });

  it('exits 2 on an unreadable token file and 1 when the cloud cannot be reached', async () => {
    const dir = tempDir();
    const noToken = await cli(['pull', '--machine', 'm', '--cloud-url', 'http://127.0.0.1:9', '--token-file', join(dir, 'missing')]);
    expect(noToken.code).toBe(2);
    expect(noToken.stderr).toContain(`cannot read the token file ${join(dir, 'missing')} (ENOENT)`);
    writeFileSync(join(dir, 'token'), 'abc\n');
    const port = await freePort();
    const unreachable = await cli(['pull', '--machine', 'm', '--cloud-url', `http://127.0.0.1:${port}`, '--token-file', join(dir, 'token')]);
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr).toBe(`taskhistory: pull: cannot reach http://127.0.0.1:${port} (ECONNREFUSED)\n`);
  });
});

describe('stored control characters in every readable view', () => {
  // Text hidden with ESC[8m, an OSC that sets the terminal title, a CR that rewrites the line, a C1 CSI, a bidi override and isolate, DEL.
  const hostile = 'seen\x1b[8mhidden\x1b[0m\x1b]0;pwned\x07\rrewritten\u009b2J\u202eesrever\u2066x\u2069\x7f';
  const shown = 'seen\\x1b[8mhidden\\x1b[0m\\x1b]0;pwned\\x07\\rrewritten\\x9b2J\\u202eesrever\\u2066x\\u2069\\x7f';
  /** Every character a terminal could act on, except the newlines that separate lines. */
  const RAW_CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;
  let on: (...args: string[]) => Promise<CliRun>;
  let taskId: string;

  beforeAll(async () => {
    const daemon = await startDaemon();
    on = (...args) => cli(['--socket', daemon.socketPath, ...args]);
    const client = await TaskHistoryClient.connect({ socketPath: daemon.socketPath });
    ({ task_id: taskId } = await client.createTask({ description: hostile, mode: 'autonomous', steps: [{ command: hostile }], agent: hostile }));
    await client.logStep({ task_id: taskId, step_num: 1, command: hostile, status: 'failed', output: `first line\n${hostile}`, error: hostile, recovery: hostile });
    await client.close();
  });

  /** The view's output shows the hostile text escaped `times` times and holds no raw control character. */
  async function expectEscaped(args: string[], times: number): Promise<string> {
    const run = await on(...args);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).not.toMatch(RAW_CONTROL);
    expect(run.stdout.split(shown).length - 1).toBe(times);
    return run.stdout;
  }

  it('show: description, agent, plan, command, output, error and recovery', async () => {
    const text = await expectEscaped(['show', taskId], 6);
    // The plan is JSON: C0 controls in JSON's own escapes, C1 and bidi in ours.
    expect(text).toContain('{"command":"seen\\u001b[8mhidden');
    expect(text).toContain('\\x9b2J\\u202eesrever');
    // Multi-line output keeps its lines.
    expect(text).toMatch(/output:\n +first line\n +seen\\x1b\[8m/);
  });

  it('recent: the description', async () => {
    await expectEscaped(['recent'], 1);
  });

  it('tail: the description and the command', async () => {
    await expectEscaped(['tail'], 2);
  });

  it('status: the running task and its agent', async () => {
    await expectEscaped(['status'], 2);
  });

  it('export stays the raw to_dict JSON', async () => {
    const run = await on('export');
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout).tasks[0].description).toBe(hostile);
  });
});
