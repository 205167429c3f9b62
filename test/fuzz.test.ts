import { connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import { seededRandom } from '../node/seeded-random.js';
import { daemonWithSocket } from './daemon-harness.js';

/** Values of every JSON type and some edge cases, for params that expect something else. */
const ODD_VALUES: unknown[] = [null, true, false, 0, -1, 1.5, 1e308, -0, '', 'x', 'task_0_000000', [], [1, 'a'], {}, { a: { b: [null] } }, 'é\u0000\u2028', '🦀'.repeat(100)];
const METHODS = ['create_task', 'log_step', 'complete_task', 'get_task', 'get_recent', 'to_dict', 'status', 'subscribe', 'unsubscribe', 'verify', 'redaction_rules', 'nope', 'rpc.discover'];
const KEYS = ['description', 'mode', 'steps', 'agent', 'task_id', 'step_num', 'command', 'status', 'output', 'error', 'recovery', 'final_status', 'count', 'subscription', 'started_at', 'duration_ms', 'exit_code', 'extra'];

function oddMessage(random: () => number, taskId: string): string {
  const pick = <T>(list: T[]): T => list[Math.floor(random() * list.length)];
  const roll = random();
  if (roll < 0.1) return pick(['', ' ', '{', '[', '{"jsonrpc":"2.0"', 'null', '[]', '[[]]', '"x"', '1', '{"jsonrpc":"1.0","id":1,"method":"status"}', '\u0000\u0001']);
  const params: Record<string, unknown> = {};
  for (const key of KEYS) if (random() < 0.35) params[key] = random() < 0.5 ? pick(ODD_VALUES) : key === 'task_id' ? taskId : pick(ODD_VALUES);
  const message: Record<string, unknown> = { jsonrpc: random() < 0.95 ? '2.0' : pick(ODD_VALUES), method: random() < 0.95 ? pick(METHODS) : pick(ODD_VALUES) };
  if (random() < 0.9) message.id = random() < 0.8 ? Math.floor(random() * 1e6) : pick(ODD_VALUES);
  if (random() < 0.9) message.params = random() < 0.9 ? params : pick(ODD_VALUES);
  const text = JSON.stringify(message);
  return random() < 0.1 ? `[${text},${text}]` : text;
}

/**
 * How many messages JSON-RPC 2.0 answers for one text: none for a notification (a valid request
 * without "id") or a batch holding only notifications; one for anything else, parse errors and
 * invalid requests included.
 */
function answersDue(text: string): number {
  let message: unknown;
  try {
    message = JSON.parse(text);
  } catch {
    return 1;
  }
  if (!Array.isArray(message)) return isNotification(message) ? 0 : 1;
  return message.length === 0 || !message.every(isNotification) ? 1 : 0;
}

function isNotification(message: unknown): boolean {
  if (message === null || typeof message !== 'object' || Array.isArray(message)) return false;
  const m = message as Record<string, unknown>;
  const structuredParams = !('params' in m) || (m.params !== null && typeof m.params === 'object');
  return m.jsonrpc === '2.0' && typeof m.method === 'string' && structuredParams && !('id' in m);
}

describe('bad input never takes the daemon down or changes the log', () => {
  const suite = daemonWithSocket();

  it('answers 2,000 seeded malformed or mistyped messages on both framings with well-formed JSON-RPC, one answer for each message due one, records nothing, and the chain still verifies', async () => {
    const { daemon, socket } = suite;
    const random = seededRandom(7);
    const { task_id } = await socket.call('create_task', { description: 'fuzz target', mode: 'autonomous', steps: [] });
    const seqBefore = (await socket.call('status')).last_seq;
    const lineTexts: string[] = [];
    const socketTexts: string[] = [];
    for (let i = 0; i < 1000; i++) {
      lineTexts.push(oddMessage(random, task_id).replace(/\n/g, ' '));
      socketTexts.push(oddMessage(random, task_id));
    }
    // Blank lines are skipped by the line framing, not answered.
    const lineAnswersDue = 1 + lineTexts.reduce((sum, text) => sum + (text.trim() === '' ? 0 : answersDue(text)), 0);
    const socketAnswersDue = socketTexts.reduce((sum, text) => sum + answersDue(text), 0);

    const lines = connect(daemon.socketPath);
    await new Promise((resolve) => lines.once('connect', resolve));
    let lineAnswers = '';
    lines.on('data', (chunk) => (lineAnswers += chunk.toString()));
    const linesClosed = new Promise((resolve) => lines.once('close', resolve));
    // The first byte picks the framing: open the line connection with a real request.
    lines.write('{"jsonrpc":"2.0","id":"first","method":"status"}\n');
    for (let i = 0; i < 1000; i++) {
      lines.write(`${lineTexts[i]}\n`);
      socket.send(socketTexts[i]);
    }
    // The daemon ends a line connection once it has answered every line sent before the client's end.
    lines.end();
    await linesClosed;
    const socketAnswers: unknown[] = [];
    while (socketAnswers.length < socketAnswersDue) socketAnswers.push(await socket.next());
    // Nothing beyond what was due: the next message is the answer to a fresh request.
    expect((await socket.request('status')).result).toBeDefined();
    expect(await socket.silentFor(300)).toBe(true);

    const lineMessages = lineAnswers.split('\n').filter(Boolean).map((line) => JSON.parse(line));
    expect(lineMessages.length).toBe(lineAnswersDue);
    // Every answer is JSON-RPC 2.0: a result or an error with an integer code.
    for (const answer of [...socketAnswers, ...lineMessages].flat()) {
      const a = answer as { jsonrpc?: unknown; error?: { code?: unknown }; result?: unknown; method?: unknown };
      expect(a.jsonrpc).toBe('2.0');
      expect(a.method).toBeUndefined(); // no record, so no event notification either
      expect('result' in a || Number.isInteger(a.error?.code)).toBe(true);
    }

    // Read once every message is answered. No odd message carries a valid mode, status or final_status: none may have changed the log.
    const status = await socket.call('status');
    expect(status.last_seq).toBe(seqBefore);
    expect(await socket.call('verify')).toMatchObject({ ok: true, head: { seq: seqBefore } });
    expect(daemon.proc.exitCode).toBe(null);
  });
});
