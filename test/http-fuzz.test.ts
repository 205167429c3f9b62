import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chainRecord, GENESIS_HASH, type ChainRecord } from '../protocol/records.js';
import { seededRandom } from '../node/seeded-random.js';
import { sha256Hex } from '../node/sha256.js';
import { fileBackend, openCloudSocket, startCloud, writeTokensFile, type Cloud } from './cloud-harness.js';

const M1_TOKEN = 'token-m1-0123456789';
import { openRawSocket, startDaemon, type Daemon } from './daemon-harness.js';

/**
 * Hostile bytes at both servers' HTTP front doors: the daemon's Unix socket and the cloud
 * endpoint's TCP port. Each gets a seeded corpus of malformed requests, raw bytes and half-open
 * connections; afterwards both still run, answer, and hold exactly the data they held before.
 */

const KEY = 'dGhlIHNhbXBsZSBub25jZQ==';
const upgradeRequest = (target: string, extra = '', method = 'GET') =>
  `${method} ${target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`;

/** Requests known to have crashed, or to probe a parser's edges. */
const FIXED: (string | Buffer)[] = [
  upgradeRequest('//'), // issue 15: `new URL('//')` threw in both upgrade handlers
  upgradeRequest('//x/y'),
  upgradeRequest('http://x/'),
  upgradeRequest('*'),
  upgradeRequest('/%zz'),
  upgradeRequest('/\\\\'),
  upgradeRequest('/../../etc/passwd'),
  upgradeRequest('/v1/sync?%'),
  upgradeRequest('/', '', 'POST'),
  upgradeRequest('/v1/sync', '', 'DELETE'),
  upgradeRequest('/', 'Sec-WebSocket-Version: 8\r\n'),
  upgradeRequest('/v1/sync', 'Authorization: Bearer \u0000\r\n'),
  upgradeRequest('/v1/sync', `Authorization: Bearer ${'A'.repeat(20_000)}\r\n`),
  `GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n`,
  `GET // HTTP/1.1\r\nHost: x\r\n\r\n`,
  `GET /v1/machines/%E0%A4%A/task_history.json HTTP/1.1\r\nHost: x\r\n\r\n`,
  `GET /v1/machines/m1/task_history.json?max_tasks=%zz HTTP/1.1\r\nHost: x\r\n\r\n`,
  `GET * HTTP/1.1\r\nHost: x\r\n\r\n`,
  `CONNECT x:1 HTTP/1.1\r\nHost: x:1\r\n\r\n`,
  `OPTIONS * HTTP/1.1\r\n\r\n`,
  `G\u0000T / HTTP/1.1\r\n\r\n`,
  `GET / HTTP/9.9\r\n\r\n`,
  `GET / HTTP/1.1\r\nNo colon here\r\n\r\n`,
  `GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n`,
  `POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello`,
  `POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\ngarbage\r\n`,
  `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(70_000)}\r\n\r\n`,
  `GET / HTTP/1.1\r\n${Array.from({ length: 3000 }, (_, i) => `X-${i}: y`).join('\r\n')}\r\n\r\n`,
  'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n',
  Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03]), // a TLS ClientHello
  Buffer.from([0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28]),
  '{"jsonrpc":"2.0","id":1,"method":"status"\xff\xfe}\n',
  '[\n]\n{\n',
  '\r\n\r\n\r\n',
];

/** A well-formed upgrade, mangled: bytes flipped, dropped, duplicated, or the request cut short. */
function mangled(random: () => number, base: string): Buffer {
  const bytes = [...Buffer.from(base)];
  const edits = 1 + Math.floor(random() * 6);
  for (let i = 0; i < edits; i++) {
    const at = Math.floor(random() * bytes.length);
    const roll = random();
    if (roll < 0.3) bytes[at] = Math.floor(random() * 256);
    else if (roll < 0.5) bytes.splice(at, 1 + Math.floor(random() * 10));
    else if (roll < 0.7) bytes.splice(at, 0, ...bytes.slice(at, at + Math.floor(random() * 40)));
    else if (roll < 0.85) bytes.splice(at, 0, ...Buffer.from(['\r\n', ':', ' ', '\u0000', '%', '//', '\r\n\r\n'][Math.floor(random() * 7)]));
    else bytes.length = at;
  }
  return Buffer.from(bytes);
}

interface Probe {
  payload: Buffer;
  /** End our side after writing (half-open), or leave it open until the server acts. */
  halfClose: boolean;
  /** Write in pieces, a few ms apart. */
  trickle: boolean;
}

function corpus(seed: number, base: string): Probe[] {
  const random = seededRandom(seed);
  const payloads = [...FIXED.map((one) => (typeof one === 'string' ? Buffer.from(one, 'latin1') : one))];
  for (let i = 0; i < 150; i++) payloads.push(mangled(random, base));
  for (let i = 0; i < 30; i++) payloads.push(Buffer.from(Array.from({ length: 1 + Math.floor(random() * 300) }, () => Math.floor(random() * 256))));
  return payloads.map((payload) => ({ payload, halfClose: random() < 0.5, trickle: random() < 0.15 }));
}

/** What the server sent back before it closed (or before we gave up waiting and closed). */
function probe(open: () => Socket, { payload, halfClose, trickle }: Probe): Promise<string> {
  return new Promise((resolve) => {
    const socket = open();
    let answer = '';
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(answer);
    };
    const timer = setTimeout(done, 1500);
    socket.on('data', (chunk: Buffer) => (answer += chunk.toString('latin1')));
    socket.on('error', () => undefined);
    socket.once('close', done);
    socket.once('connect', async () => {
      const pieces = trickle ? [payload.subarray(0, payload.length >> 1), payload.subarray(payload.length >> 1)] : [payload];
      for (const piece of pieces) {
        if (socket.destroyed) return;
        socket.write(piece);
        if (trickle) await new Promise((r) => setTimeout(r, 20));
      }
      if (halfClose && !socket.destroyed) socket.end();
    });
  });
}

async function runAll(probes: Probe[], open: () => Socket, parallel = 12): Promise<string[]> {
  const answers: string[] = new Array(probes.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < probes.length) {
        const index = next++;
        answers[index] = await probe(open, probes[index]);
      }
    }),
  );
  return answers;
}

/** Every status line in an answer: a well-formed server says 101 or 4xx to these, never 5xx. */
function statusCodes(answer: string): number[] {
  return [...answer.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((match) => Number(match[1]));
}

function treeDigest(dir: string): string {
  const hash = createHash('sha256');
  const walk = (path: string) => {
    for (const name of readdirSync(path).sort()) {
      const full = join(path, name);
      if (statSync(full).isDirectory()) walk(full);
      else hash.update(`${full}\n`).update(readFileSync(full));
    }
  };
  walk(dir);
  return hash.digest('hex');
}

function smallChain(): ChainRecord[] {
  const created = chainRecord({ type: 'task_created', task_id: 'task-f', description: 'fuzz target', mode: 'autonomous', plan: [], machine_id: 'm1', ts: 1_700_000_000 }, 0, GENESIS_HASH, sha256Hex);
  const completed = chainRecord({ type: 'task_completed', task_id: 'task-f', final_status: 'completed', ts: 1_700_000_001 }, created.seq, created.hash, sha256Hex);
  return [created, completed];
}

describe('no request crashes a server (seeded HTTP fuzz)', () => {
  let daemon: Daemon;
  let cloud: Cloud;
  let cloudDataDir: string;
  let cloudPort: number;

  beforeAll(async () => {
    const site = await fileBackend.newSite();
    cloudDataDir = site.args[site.args.indexOf('--data-dir') + 1];
    const tokensFile = writeTokensFile([{ token: M1_TOKEN, machine_id: 'm1' }]);
    [daemon, cloud] = await Promise.all([startDaemon({ args: ['--handshake-timeout-ms', '1000'] }), startCloud(site, { tokensFile })]);
    cloudPort = Number(new URL(cloud.url).port);
  });
  afterAll(async () => {
    await daemon?.stop();
    cloud?.proc.kill('SIGTERM');
  });

  it("the daemon's socket: every probe gets 101, a 4xx, a JSON-RPC error line or a clean close; it serves on with its data unchanged", async () => {
    const rpc = await openRawSocket(daemon.socketPath);
    const { task_id } = await rpc.call('create_task', { description: 'before the fuzz', mode: 'autonomous', steps: ['a'] });
    await rpc.call('log_step', { task_id, step_num: 1, command: 'a', status: 'success', output: 'kept' });
    const before = await rpc.call('status');

    const answers = await runAll(corpus(15, upgradeRequest('/')), () => connect(daemon.socketPath));
    for (const answer of answers) {
      for (const code of statusCodes(answer)) expect([101, 400, 404, 405, 408, 426, 431]).toContain(code);
      if (answer.startsWith('{')) for (const line of answer.split('\n').filter(Boolean)) expect(JSON.parse(line).jsonrpc).toBe('2.0');
    }
    expect(answers.some((answer) => statusCodes(answer).includes(400))).toBe(true);

    expect(daemon.proc.exitCode).toBe(null);
    const after = await openRawSocket(daemon.socketPath);
    const status = await after.call('status');
    expect([status.last_seq, status.head_hash, status.tasks]).toEqual([before.last_seq, before.head_hash, before.tasks]);
    expect(await after.call('verify')).toMatchObject({ ok: true, head: { seq: before.last_seq } });
    rpc.close();
    after.close();
  });

  it("the cloud endpoint's port: every probe gets a 4xx or a clean close, never a 5xx; it serves on with its data unchanged", async () => {
    const m1 = await openCloudSocket(cloud.url, M1_TOKEN);
    const chain = smallChain();
    expect(await m1.call('push', { machine_id: 'm1', records: chain })).toEqual({ acked_seq: 2, head_hash: chain[1].hash });
    const digest = treeDigest(cloudDataDir);

    const answers = await runAll(corpus(16, upgradeRequest('/v1/sync')), () => connect(cloudPort, '127.0.0.1'));
    for (const answer of answers) for (const code of statusCodes(answer)) expect([400, 401, 404, 405, 408, 426, 431]).toContain(code);
    expect(answers.some((answer) => statusCodes(answer).includes(400))).toBe(true);

    expect(cloud.proc.exitCode).toBe(null);
    const again = await openCloudSocket(cloud.url, M1_TOKEN);
    expect(await again.call('head', { machine_id: 'm1' })).toEqual({ acked_seq: 2, head_hash: chain[1].hash });
    expect(treeDigest(cloudDataDir)).toBe(digest);
    m1.close();
    again.close();
  });
});
