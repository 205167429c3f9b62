import { chmodSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ErrorCodes } from '../protocol/errors.js';
import { socketUrl } from '../protocol/paths.js';
import { openRawSocket, startDaemon, type Daemon, type RawSocket } from './daemon-harness.js';
import { LineClient } from './line-client.js';
import { sleep, spawnTracked, tempDir, waitFor, type Spawned } from './processes.js';

/** Every bound on batches, connections, buffers, subscribers and handshakes, each with its refusal. */

const request = (id: number, method: string, params?: unknown) => ({ jsonrpc: '2.0', id, method, ...(params !== undefined && { params }) });
const createTask = (id: number) => request(id, 'create_task', { description: `task ${id}`, mode: 'autonomous', steps: [] });

/** Bytes the daemon sent on a raw connection until it closed it. */
function readUntilClosed(socket: Socket): Promise<string> {
  let text = '';
  socket.on('data', (chunk: Buffer) => (text += chunk.toString()));
  return new Promise((resolve) => socket.once('close', () => resolve(text)));
}

async function rawConnection(socketPath: string): Promise<Socket> {
  const socket = connect(socketPath);
  socket.on('error', () => undefined);
  await new Promise((resolve) => socket.once('connect', resolve));
  return socket;
}

describe('batch bounds', () => {
  let daemon: Daemon;
  let rpc: RawSocket;
  beforeAll(async () => {
    daemon = await startDaemon({ args: ['--max-batch-requests', '10', '--max-batch-answer-bytes', '1500', '--batch-concurrency', '2'] });
    rpc = await openRawSocket(daemon.socketPath);
  });
  afterAll(() => rpc?.close());

  it('a batch longer than --max-batch-requests is refused whole with one 1003 naming the limit; nothing is executed', async () => {
    const before = (await rpc.call('status')).last_seq;
    rpc.send(JSON.stringify(Array.from({ length: 11 }, (_, i) => createTask(i + 1))));
    expect(await rpc.next()).toEqual({
      jsonrpc: '2.0',
      id: null,
      error: { code: ErrorCodes.PayloadTooLarge, message: 'Batch of 11 requests is over the limit of 10; send it in smaller batches', data: { limit: 10, entries: 11 } },
    });
    expect((await rpc.call('status')).last_seq).toBe(before);
    rpc.send(JSON.stringify(Array.from({ length: 10 }, (_, i) => createTask(i + 1))));
    const answers = await rpc.next();
    expect(answers.map((answer: { result?: unknown }) => 'result' in answer)).toEqual(new Array(10).fill(true));
    expect((await rpc.call('status')).last_seq).toBe(before + 10);
  });

  it("once a batch's answer reaches --max-batch-answer-bytes, the calls not yet started are refused by id, unexecuted (1003)", async () => {
    const before = (await rpc.call('status')).last_seq;
    // Each status answer is several hundred bytes: the budget runs out within the first few.
    const batch = [...Array.from({ length: 4 }, (_, i) => request(100 + i, 'status')), ...Array.from({ length: 6 }, (_, i) => createTask(200 + i))];
    rpc.send(JSON.stringify(batch));
    const answers: { id: number; result?: unknown; error?: { code: number; data: { executed: boolean; limit: number } } }[] = await rpc.next();
    expect(answers.map((answer) => answer.id)).toEqual(batch.map((one) => one.id));
    const refused = answers.filter((answer) => answer.error);
    expect(refused.length).toBeGreaterThan(0);
    for (const answer of refused) expect(answer.error).toMatchObject({ code: ErrorCodes.PayloadTooLarge, data: { executed: false, limit: 1500 } });
    const createdIds = answers.filter((answer) => answer.id >= 200 && answer.result).length;
    expect((await rpc.call('status')).last_seq).toBe(before + createdIds);
  });
});

describe('connection bounds and handshake deadlines', () => {
  let daemon: Daemon;
  beforeAll(async () => {
    daemon = await startDaemon({ args: ['--max-connections', '3', '--handshake-timeout-ms', '800'] });
  });

  it('past --max-connections a line client gets a 1007 error line and a WebSocket client a 503; a freed slot serves again', async () => {
    const held = await Promise.all([openRawSocket(daemon.socketPath), openRawSocket(daemon.socketPath), openRawSocket(daemon.socketPath)]);
    const line = await rawConnection(daemon.socketPath);
    const lineAnswer = readUntilClosed(line);
    line.write('{"jsonrpc":"2.0","id":1,"method":"status"}\n');
    const refusal = JSON.parse((await lineAnswer).trim());
    expect(refusal).toMatchObject({ jsonrpc: '2.0', id: null, error: { code: ErrorCodes.ConnectionLimit, data: { limit: 3 } } });
    expect(refusal.error.message).toContain('--max-connections');

    const status = await new Promise<number>((resolve) => {
      const ws = new WebSocket(socketUrl(daemon.socketPath));
      ws.on('error', () => undefined);
      ws.once('unexpected-response', (_request, response) => resolve(response.statusCode ?? 0));
      ws.once('open', () => resolve(101));
    });
    expect(status).toBe(503);

    held[0].close();
    const again = await waitFor(async () => {
      try {
        const rpc = await openRawSocket(daemon.socketPath);
        return (await rpc.request('status')).result ? rpc : null;
      } catch {
        return null;
      }
    }, 10_000, 'a free connection slot');
    again.close();
    held.slice(1).forEach((rpc) => rpc.close());
  });

  it('a connection that sends nothing is closed; a line never finished gets a 1007 line; an upgrade never finished gets 408', async () => {
    await waitFor(async () => (await openRawSocket(daemon.socketPath).then((rpc) => (rpc.close(), true), () => false)), 10_000, 'connection slots free again');
    const silent = await rawConnection(daemon.socketPath);
    expect(await readUntilClosed(silent)).toBe('');

    const partialLine = await rawConnection(daemon.socketPath);
    const lineAnswer = readUntilClosed(partialLine);
    partialLine.write('{"jsonrpc":"2.0","id":1,');
    const lineRefusal = JSON.parse((await lineAnswer).trim());
    expect(lineRefusal.error).toMatchObject({ code: ErrorCodes.ConnectionLimit, data: { reason: 'no complete line within 800 ms of connecting' } });

    const partialUpgrade = await rawConnection(daemon.socketPath);
    const upgradeAnswer = readUntilClosed(partialUpgrade);
    partialUpgrade.write('GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n');
    expect(await upgradeAnswer).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n/);
  });

  it('a connection that spoke in time stays open past the deadline, on either framing', async () => {
    const lines = await LineClient.open(daemon.socketPath);
    expect((await lines.exchange('{"jsonrpc":"2.0","id":1,"method":"status"}')).result).toBeTruthy();
    const ws = await openRawSocket(daemon.socketPath);
    await sleep(1500);
    expect((await lines.exchange('{"jsonrpc":"2.0","id":2,"method":"status"}')).result).toBeTruthy();
    expect(await ws.call('status')).toBeTruthy();
    lines.close();
    ws.close();
  });
});

/** nobody: a second uid whose clients are real processes, reaching the socket through its group. */
const NOBODY = { uid: 65534, gid: 65534 };

/** A node client under `user` that opens `count` line connections one after another, sends status on each and prints each answer line. */
function lineClientsAs(user: { uid: number; gid: number }, socketPath: string, count: number): Spawned {
  const script = `const net = require('node:net');
const open = (i) => {
  if (i === ${count}) return;
  const socket = net.connect(${JSON.stringify(socketPath)}, () => socket.write('{"jsonrpc":"2.0","id":1,"method":"status"}\\n'));
  socket.on('error', () => undefined);
  socket.once('data', (chunk) => { process.stdout.write(chunk.toString()); open(i + 1); });
};
open(0);`;
  return spawnTracked(process.execPath, ['-e', script], { ...user, cwd: '/' });
}

describe('per-uid connection cap (SO_PEERCRED)', () => {
  let daemon: Daemon;
  beforeAll(async () => {
    const dir = tempDir('taskhistoryd-percap-');
    chmodSync(dir, 0o755);
    daemon = await startDaemon({ socketPath: join(dir, 'run', 'taskhistoryd.sock'), args: ['--max-connections-per-uid', '2', '--socket-group', String(NOBODY.gid)] });
  });

  it("past --max-connections-per-uid a uid's next connection gets a 1007 line naming the uid and the cap, while another uid connects; a closed one frees its slot", async () => {
    const status = '{"jsonrpc":"2.0","id":1,"method":"status"}';
    const held = [await LineClient.open(daemon.socketPath), await LineClient.open(daemon.socketPath)];
    for (const client of held) expect((await client.exchange(status)).result).toBeTruthy();
    const third = await rawConnection(daemon.socketPath);
    const thirdAnswer = readUntilClosed(third);
    third.write(`${status}\n`);
    const refusal = JSON.parse((await thirdAnswer).trim());
    expect(refusal).toMatchObject({ jsonrpc: '2.0', id: null, error: { code: ErrorCodes.ConnectionLimit, data: { limit: 2, uid: 0 } } });
    expect(refusal.error.message).toBe('Connection refused: uid 0 already holds its limit of 2 connections to taskhistoryd; close some or raise --max-connections-per-uid');

    // nobody is served while root is at its cap, up to the same cap of its own.
    const nobody = lineClientsAs(NOBODY, daemon.socketPath, 3);
    const answers = await waitFor(() => {
      const lines = nobody.stdout().split('\n').filter(Boolean);
      return lines.length === 3 ? lines.map((line) => JSON.parse(line)) : null;
    }, 15_000, "nobody's three connections to be answered");
    expect(answers.slice(0, 2).map((answer) => answer.result?.last_seq)).toEqual([0, 0]);
    expect(answers[2].error).toMatchObject({ code: ErrorCodes.ConnectionLimit, data: { limit: 2, uid: NOBODY.uid } });
    expect(answers[2].error.message).toContain(`uid ${NOBODY.uid} already holds its limit of 2 connections`);

    held[0].close();
    const again = await waitFor(async () => {
      const client = await LineClient.open(daemon.socketPath);
      const answer = await client.exchange(status);
      if (answer.result) return client;
      client.close();
      return null;
    }, 10_000, 'a connection of uid 0 to be served again after one closed');
    again.close();
    held[1].close();
    process.kill(nobody.pid, 'SIGKILL');
    await nobody.exited;
  });
});

describe('buffer bounds', () => {
  let daemon: Daemon;
  beforeAll(async () => {
    daemon = await startDaemon({ args: ['--max-buffered-bytes', '1000000', '--max-message-bytes', '4000000', '--max-client-output-bytes', '262144'] });
  });

  it('past --max-buffered-bytes across all connections, the connection holding the most is cut off with a 1007 line saying why; the others are served', async () => {
    const small = await rawConnection(daemon.socketPath);
    small.write(`{"jsonrpc":"2.0","id":1,"method":"status","params":{"pad":"${'s'.repeat(300_000)}`);
    await sleep(200);
    const big = await rawConnection(daemon.socketPath);
    const bigAnswer = readUntilClosed(big);
    big.write(`{"jsonrpc":"2.0","id":2,"method":"status","params":{"pad":"${'b'.repeat(900_000)}`);
    const refusal = JSON.parse((await bigAnswer).trim());
    expect(refusal.error.code).toBe(ErrorCodes.ConnectionLimit);
    expect(refusal.error.data.reason).toMatch(/holds \d+ bytes for all its connections \(limit 1000000\) and this connection held the most/);

    const smallAnswer = new Promise<string>((resolve) => small.once('data', (chunk: Buffer) => resolve(chunk.toString())));
    small.write('"}}\n');
    expect(JSON.parse(await smallAnswer)).toMatchObject({ id: 1, error: { code: ErrorCodes.InvalidParams } });
    small.destroy();
  });

  it('a subscriber that stops reading is cut off past --max-client-output-bytes with a 1007 line naming why; writers are not held up', async () => {
    const subscriber = await LineClient.open(daemon.socketPath);
    expect((await subscriber.exchange('{"jsonrpc":"2.0","id":1,"method":"subscribe"}')).result.subscription).toBeTruthy();
    subscriber.socket.pause();
    const writer = await openRawSocket(daemon.socketPath);
    const { task_id } = await writer.call('create_task', { description: 'noisy', mode: 'autonomous', steps: [] });
    let step = 0;
    await waitFor(async () => {
      const batch = Array.from({ length: 20 }, () => request(++step, 'log_step', { task_id, step_num: step, command: 'x', status: 'success', output: 'o'.repeat(16 * 1024) }));
      writer.send(JSON.stringify(batch));
      const answers = await writer.next();
      expect(answers.every((answer: { result?: unknown }) => answer.result)).toBe(true);
      return daemon.stderr().includes('cut off a client');
    }, 30_000, 'the stalled subscriber to be cut off');
    subscriber.socket.resume();
    const seen = await subscriber.drain(3000);
    const last = seen[seen.length - 1];
    expect(last.error).toMatchObject({ code: ErrorCodes.ConnectionLimit });
    expect(last.error.data.reason).toMatch(/^this connection fell behind: \d+ bytes of answers and events were waiting for it to read \(limit 262144\)$/);
    await waitFor(() => subscriber.closed, 10_000, 'the subscriber connection to close');
    writer.close();
  });
});

describe('expensive calls', () => {
  let daemon: Daemon;
  beforeAll(async () => {
    daemon = await startDaemon();
  });

  it("a client's log_step is answered while another client's batch of verify calls runs", async () => {
    const loader = await openRawSocket(daemon.socketPath);
    const { task_id } = await loader.call('create_task', { description: 'a long log', mode: 'autonomous', steps: [] });
    let step = 0;
    loader.send(JSON.stringify(Array.from({ length: 1000 }, () => request(++step, 'log_step', { task_id, step_num: step, command: `cmd ${step}`, status: 'success', output: 'x'.repeat(1024) }))));
    await loader.next(30_000);
    const verifier = await openRawSocket(daemon.socketPath);
    const writer = await openRawSocket(daemon.socketPath);
    const order: string[] = [];
    verifier.send(JSON.stringify(Array.from({ length: 10 }, (_, i) => request(i + 1, 'verify'))));
    const verified = verifier.next(120_000).then((answers) => (order.push('verify batch'), answers));
    const logged = writer.call('log_step', { task_id, step_num: ++step, command: 'while verifying', status: 'success' }).then((result) => (order.push('log_step'), result));
    const [reports, stepResult] = await Promise.all([verified, logged]);
    expect(order).toEqual(['log_step', 'verify batch']);
    expect(stepResult.seq).toBeGreaterThan(1000);
    expect(reports).toHaveLength(10);
    for (const report of reports) expect(report.result).toMatchObject({ ok: true });
    for (const rpc of [loader, verifier, writer]) rpc.close();
  });
});
