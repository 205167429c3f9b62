import { spawnSync } from 'node:child_process';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../protocol/errors.js';
import { openRawSocket, startDaemon, type Daemon } from './daemon-harness.js';
import { LineClient } from './line-client.js';
import { waitFor } from './processes.js';

/** The newline-delimited JSON framing on the daemon's socket, spoken by a bare net.connect client. */

const MAX_LINE_BYTES = 4096;

describe('newline-delimited JSON-RPC', () => {
  let daemon: Daemon;
  let client: LineClient;

  beforeAll(async () => {
    daemon = await startDaemon({ args: ['--max-message-bytes', String(MAX_LINE_BYTES)] });
    client = await LineClient.open(daemon.socketPath);
  });
  afterAll(() => client?.close());

  it('answers a request with exactly {jsonrpc, id, result} on one line', async () => {
    const answer = await client.exchange('{"jsonrpc":"2.0","id":1,"method":"status"}');
    expect(Object.keys(answer).sort()).toEqual(['id', 'jsonrpc', 'result']);
    expect(answer).toMatchObject({ jsonrpc: '2.0', id: 1, result: { machine_id: 'test-machine', socket: daemon.socketPath } });
  });

  it('answers errors as JSON-RPC error objects', async () => {
    expect(await client.exchange('{"jsonrpc":"2.0","id":"x","method":"nope"}')).toEqual({ jsonrpc: '2.0', id: 'x', error: { code: ErrorCodes.MethodNotFound, message: 'Method not found' } });
    expect(await client.exchange('{"jsonrpc":"2.0","id":2,"method":"get_task","params":{"task_id":"task_1_000000"}}')).toEqual({
      jsonrpc: '2.0', id: 2, error: { code: ErrorCodes.TaskNotFound, message: 'no task task_1_000000', data: { task_id: 'task_1_000000' } },
    });
    const invalid = await client.exchange('{"jsonrpc":"2.0","id":3,"method":"get_recent","params":{"count":"ten"}}');
    expect(invalid.error.code).toBe(ErrorCodes.InvalidParams);
    expect(invalid.error.data.issues.map((issue: { field: string }) => issue.field)).toEqual(['count']);
    expect(await client.exchange('{"jsonrpc":"2.0","method":7,"id":4}')).toEqual({ jsonrpc: '2.0', id: 4, error: { code: ErrorCodes.InvalidRequest, message: 'Invalid Request' } });
  });

  it('a line that is not JSON gets -32700 and the connection stays usable', async () => {
    expect(await client.exchange('{"jsonrpc":"2.0","method":"status",')).toEqual({ jsonrpc: '2.0', id: null, error: { code: ErrorCodes.ParseError, message: 'Parse error' } });
    expect(await client.exchange('{not json at all}')).toEqual({ jsonrpc: '2.0', id: null, error: { code: ErrorCodes.ParseError, message: 'Parse error' } });
    expect((await client.exchange('{"jsonrpc":"2.0","id":5,"method":"status"}')).result.machine_id).toBe('test-machine');
  });

  it('answers a batch with one array line; notifications in it get no answer; [] is one Invalid Request', async () => {
    const batch = JSON.stringify([
      { jsonrpc: '2.0', id: 'a', method: 'status' },
      { jsonrpc: '2.0', method: 'create_task', params: { description: 'from a batch notification', mode: 'autonomous', steps: [] } },
      { jsonrpc: '2.0', id: 'b', method: 'get_recent', params: { count: 1 } },
      { jsonrpc: '2.0', id: 'c', method: 'nope' },
    ]);
    const answer: any[] = await client.exchange(batch);
    expect(answer.map((one) => one.id).sort()).toEqual(['a', 'b', 'c']);
    expect(answer.find((one) => one.id === 'c').error.code).toBe(ErrorCodes.MethodNotFound);
    expect(answer.find((one) => one.id === 'a').result.machine_id).toBe('test-machine');
    expect(await client.exchange('[]')).toEqual({ jsonrpc: '2.0', id: null, error: { code: ErrorCodes.InvalidRequest, message: 'Invalid Request' } });
    expect(await client.exchange('[1,2]')).toEqual([
      { jsonrpc: '2.0', id: null, error: { code: ErrorCodes.InvalidRequest, message: 'Invalid Request' } },
      { jsonrpc: '2.0', id: null, error: { code: ErrorCodes.InvalidRequest, message: 'Invalid Request' } },
    ]);
  });

  it('a notification gets no answer but is executed', async () => {
    const before = (await client.exchange('{"jsonrpc":"2.0","id":6,"method":"to_dict"}')).result.count;
    client.write('{"jsonrpc":"2.0","method":"create_task","params":{"description":"notified","mode":"autonomous","steps":[]}}\n');
    client.write('[{"jsonrpc":"2.0","method":"status"},{"jsonrpc":"2.0","method":"nope"}]\n');
    expect((await client.exchange('{"jsonrpc":"2.0","id":7,"method":"status"}')).id).toBe(7);
    // A notification is not acknowledged, so its commit may land after the next answer.
    const after = await waitFor(async () => {
      const { result } = await client.exchange('{"jsonrpc":"2.0","id":8,"method":"to_dict"}');
      return result.count > before && result;
    }, 10_000, 'the notified task');
    expect(after.count).toBe(before + 1);
    expect(after.tasks.at(-1).description).toBe('notified');
  });

  it('answers pipelined requests, written in one chunk or split mid-line, each under its own id', async () => {
    const [a, b] = [
      (await client.exchange('{"jsonrpc":"2.0","id":"ca","method":"create_task","params":{"description":"A","mode":"autonomous","steps":[]}}')).result.task_id,
      (await client.exchange('{"jsonrpc":"2.0","id":"cb","method":"create_task","params":{"description":"B","mode":"autonomous","steps":[]}}')).result.task_id,
    ];
    const get = (id: string | number, taskId: string) => JSON.stringify({ jsonrpc: '2.0', id, method: 'get_task', params: { task_id: taskId } });
    const text = `${get('first', a)}\n${get(2, b)}\n\n${get('third', a)}\n`;
    client.write(text.slice(0, 50));
    client.write(text.slice(50, 130));
    client.write(text.slice(130));
    const answers = [await client.next(), await client.next(), await client.next()];
    const byId = new Map(answers.map((answer) => [answer.id, answer.result.description]));
    expect(byId).toEqual(new Map<string | number, string>([['first', 'A'], [2, 'B'], ['third', 'A']]));
  });

  it('reassembles a UTF-8 character split between two writes', async () => {
    const line = Buffer.from('{"jsonrpc":"2.0","id":"utf8","method":"create_task","params":{"description":"café ☕","mode":"autonomous","steps":[]}}\n', 'utf8');
    const splitAt = line.indexOf(Buffer.from('é', 'utf8')) + 1; // between the two bytes of "é"
    client.socket.write(line.subarray(0, splitAt));
    client.socket.write(line.subarray(splitAt));
    const { result } = await client.next();
    const task = await client.exchange(JSON.stringify({ jsonrpc: '2.0', id: 'get', method: 'get_task', params: { task_id: result.task_id } }));
    expect(task.result.description).toBe('café ☕');
  });

  it('delivers event notifications to a subscriber, without an id', async () => {
    const watcher = await LineClient.open(daemon.socketPath);
    const { subscription } = (await watcher.exchange('{"jsonrpc":"2.0","id":1,"method":"subscribe"}')).result;
    const writer = await openRawSocket(daemon.socketPath);
    const created = await writer.call('create_task', { description: 'watched over ndjson', mode: 'autonomous', steps: [] });
    const step = await writer.call('log_step', { task_id: created.task_id, step_num: 1, command: 'ls', status: 'success' });
    const events = [await watcher.next(), await watcher.next()];
    for (const event of events) {
      expect(Object.keys(event).sort()).toEqual(['jsonrpc', 'method', 'params']);
      expect(event).toMatchObject({ jsonrpc: '2.0', method: 'event', params: { subscription, task_id: created.task_id } });
    }
    expect(events.map((event) => [event.params.type, event.params.seq])).toEqual([
      ['task_created', created.seq],
      ['step_logged', step.seq],
    ]);
    writer.close();
    watcher.close();
  });

  it('a line over --max-message-bytes is skipped with PayloadTooLarge; the next line is served', async () => {
    const long = JSON.stringify({ jsonrpc: '2.0', id: 'long', method: 'create_task', params: { description: 'x'.repeat(MAX_LINE_BYTES), mode: 'autonomous', steps: [] } });
    const countBefore = (await client.exchange('{"jsonrpc":"2.0","id":8,"method":"status"}')).result.tasks;
    client.write(`${long.slice(0, 1000)}`);
    client.write(`${long.slice(1000)}\n{"jsonrpc":"2.0","id":9,"method":"status"}\n`);
    expect(await client.next()).toEqual({
      jsonrpc: '2.0', id: null, error: { code: ErrorCodes.PayloadTooLarge, message: 'Payload too large', data: { limit: MAX_LINE_BYTES } },
    });
    const after = await client.next();
    expect(after.id).toBe(9);
    expect(after.result.tasks).toBe(countBefore);
    expect(client.closed).toBe(false);
  });

  it('serves the issue example: one line in, one line out, from a plain Unix-socket client', () => {
    const request = '{"jsonrpc":"2.0","id":1,"method":"status"}\n';
    const hasNc = spawnSync('sh', ['-c', 'command -v nc && nc -h 2>&1 | grep -q -- -U'], { encoding: 'utf8' }).status === 0;
    // nc -U sends its stdin and half-closes; the python fallback does the same.
    const run = hasNc
      ? spawnSync('sh', ['-c', `printf '%s\\n' '${request.trim()}' | nc -U -q 2 ${daemon.socketPath}`], { encoding: 'utf8', timeout: 10_000 })
      : spawnSync('python3', ['-c', [
          'import socket, sys',
          's = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)',
          's.connect(sys.argv[1])',
          's.sendall(sys.stdin.buffer.read())',
          's.shutdown(socket.SHUT_WR)',
          'data = b""',
          'while not data.endswith(b"\\n"):',
          '    chunk = s.recv(65536)',
          '    if not chunk: break',
          '    data += chunk',
          'sys.stdout.write(data.decode())',
        ].join('\n'), daemon.socketPath], { input: request, encoding: 'utf8', timeout: 10_000 });
    expect(run.status).toBe(0);
    expect(run.stdout.endsWith('\n')).toBe(true);
    expect(run.stdout.trim().split('\n')).toHaveLength(1);
    expect(JSON.parse(run.stdout)).toMatchObject({ jsonrpc: '2.0', id: 1, result: { machine_id: 'test-machine' } });
  });

  it('answers a client that half-closes right after writing: durable writes too, and a last line without its newline', async () => {
    const socket = connect(daemon.socketPath);
    let received = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (received += chunk));
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.end(
      '{"jsonrpc":"2.0","id":"a","method":"create_task","params":{"description":"half-closed","mode":"autonomous","steps":[]}}\n' +
        '{"jsonrpc":"2.0","id":"b","method":"status"}',
    );
    await new Promise((resolve) => socket.once('close', resolve));
    const answers = received.trim().split('\n').map((line) => JSON.parse(line));
    expect(answers.map((answer) => answer.id).sort()).toEqual(['a', 'b']);
    expect(answers.find((answer) => answer.id === 'a').result.task_id).toMatch(/^task_\d+_[0-9a-f]{6}$/);
  });
});
