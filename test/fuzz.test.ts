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

describe('bad input never takes the daemon down or changes the log', () => {
  const suite = daemonWithSocket();

  it('answers 2,000 seeded malformed or mistyped messages on both framings with well-formed JSON-RPC, records nothing, and the chain still verifies', async () => {
    const { daemon, socket } = suite;
    const random = seededRandom(7);
    const { task_id } = await socket.call('create_task', { description: 'fuzz target', mode: 'autonomous', steps: [] });
    const lines = connect(daemon.socketPath);
    await new Promise((resolve) => lines.once('connect', resolve));
    let lineAnswers = '';
    lines.on('data', (chunk) => (lineAnswers += chunk.toString()));
    // The first byte picks the framing: open the line connection with a real request.
    lines.write('{"jsonrpc":"2.0","id":"first","method":"status"}\n');
    const seqBefore = (await socket.call('status')).last_seq;

    for (let i = 0; i < 1000; i++) {
      lines.write(`${oddMessage(random, task_id).replace(/\n/g, ' ')}\n`);
      const text = oddMessage(random, task_id);
      socket.send(text);
    }
    // Every answer that comes back is JSON-RPC 2.0: a result or an error with an integer code.
    const status = await socket.call('status');
    const seen: unknown[] = [];
    for (;;) {
      try {
        seen.push(await socket.next(300));
      } catch {
        break;
      }
    }
    lines.end();
    await new Promise((resolve) => lines.once('close', resolve));
    const lineMessages = lineAnswers.split('\n').filter(Boolean).map((line) => JSON.parse(line));
    expect(lineMessages.length).toBeGreaterThan(500);
    for (const answer of [...seen, ...lineMessages].flat()) {
      const a = answer as { jsonrpc?: unknown; error?: { code?: unknown }; result?: unknown; method?: unknown };
      expect(a.jsonrpc).toBe('2.0');
      if (a.method === undefined) expect('result' in a || Number.isInteger(a.error?.code)).toBe(true);
    }

    // No odd message carries a valid mode, status or final_status: none may have changed the log.
    expect(status.last_seq).toBe(seqBefore);
    const report = await socket.call('verify');
    expect(report).toMatchObject({ ok: true, head: { seq: (await socket.call('status')).last_seq } });
    expect(daemon.proc.exitCode).toBe(null);
  });
});
