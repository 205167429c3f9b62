import { readFileSync } from 'node:fs';
import { dataFileContent } from '../protocol/data-file-v2.js';
import type { DataFileV2 } from '../protocol/data-file.js';
import { sha256Hex } from '../node/sha256.js';
import { describe, expect, it } from 'vitest';
import { canonicalize } from '../protocol/canonical.js';
import { ErrorCodes } from '../protocol/errors.js';
import { daemonWithSocket, openRawSocket, startDaemon } from './daemon-harness.js';
import { waitFor } from './processes.js';

/**
 * JSON-RPC 2.0 to the letter (https://www.jsonrpc.org/specification), over WebSocket. The spec's
 * examples section is reproduced literally (its methods do not exist here, so they answer -32601)
 * and once more mapped onto the daemon's own methods.
 */

const parseError = { code: ErrorCodes.ParseError, message: 'Parse error' };
const invalidRequest = { code: ErrorCodes.InvalidRequest, message: 'Invalid Request' };
const methodNotFound = { code: ErrorCodes.MethodNotFound, message: 'Method not found' };

/** Batch answers may come in any order (spec §6): compare them as a set, keyed by their canonical JSON. */
function sortedByJson(responses: unknown[]): unknown[] {
  return [...responses].sort((a, b) => canonicalize(a).localeCompare(canonicalize(b)));
}

describe('JSON-RPC 2.0 conformance (WebSocket)', () => {
  const suite = daemonWithSocket();

  /** Sends raw text and waits for the next message. */
  async function exchange(text: string): Promise<any> {
    suite.socket.send(text);
    return suite.socket.next();
  }

  /** Sends raw text that must get no answer: a request sent after it is answered first, and nothing else arrives. */
  async function expectNoAnswer(text: string): Promise<void> {
    suite.socket.send(text);
    const probe = await exchange('{"jsonrpc":"2.0","method":"status","id":"probe"}');
    expect(probe.id).toBe('probe');
    expect(await suite.socket.silentFor(300)).toBe(true);
  }

  describe('the specification examples, literally', () => {
    it('rpc call with named params to a method that does not exist: -32601 with the id', async () => {
      expect(await exchange('{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": 3}')).toEqual({
        jsonrpc: '2.0',
        error: methodNotFound,
        id: 3,
      });
    });

    it('a notification gets no answer, even for an unknown method', async () => {
      await expectNoAnswer('{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}');
      await expectNoAnswer('{"jsonrpc": "2.0", "method": "foobar"}');
    });

    it('non-existent method', async () => {
      expect(await exchange('{"jsonrpc": "2.0", "method": "foobar", "id": "1"}')).toEqual({ jsonrpc: '2.0', error: methodNotFound, id: '1' });
    });

    it('invalid JSON', async () => {
      expect(await exchange('{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]')).toEqual({ jsonrpc: '2.0', error: parseError, id: null });
    });

    it('invalid Request object', async () => {
      expect(await exchange('{"jsonrpc": "2.0", "method": 1, "params": "bar"}')).toEqual({ jsonrpc: '2.0', error: invalidRequest, id: null });
    });

    it('batch, invalid JSON: one Parse error, not an array', async () => {
      const text = '[\n  {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},\n  {"jsonrpc": "2.0", "method"\n]';
      expect(await exchange(text)).toEqual({ jsonrpc: '2.0', error: parseError, id: null });
    });

    it('batch, empty array: one Invalid Request, not an array', async () => {
      expect(await exchange('[]')).toEqual({ jsonrpc: '2.0', error: invalidRequest, id: null });
    });

    it('batch [1]: an array of one Invalid Request', async () => {
      expect(await exchange('[1]')).toEqual([{ jsonrpc: '2.0', error: invalidRequest, id: null }]);
    });

    it('batch [1,2,3]: an array of three Invalid Requests', async () => {
      const answer = { jsonrpc: '2.0', error: invalidRequest, id: null };
      expect(await exchange('[1,2,3]')).toEqual([answer, answer, answer]);
    });

    it('mixed batch: one answer per request, none for the notification', async () => {
      const text = `[
        {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
        {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "get_data", "id": "9"}
      ]`;
      const answer = await exchange(text);
      expect(Array.isArray(answer)).toBe(true);
      expect(sortedByJson(answer)).toEqual(
        sortedByJson([
          { jsonrpc: '2.0', error: methodNotFound, id: '1' },
          { jsonrpc: '2.0', error: methodNotFound, id: '2' },
          { jsonrpc: '2.0', error: invalidRequest, id: null },
          { jsonrpc: '2.0', error: methodNotFound, id: '5' },
          { jsonrpc: '2.0', error: methodNotFound, id: '9' },
        ]),
      );
    });

    it('batch of notifications only: nothing is returned', async () => {
      await expectNoAnswer('[\n  {"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]},\n  {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}\n]');
    });
  });

  describe('the same examples on the daemon methods', () => {
    it('rpc call with named params answers exactly {jsonrpc, result, id}', async () => {
      const answer = await exchange('{"jsonrpc": "2.0", "method": "get_recent", "params": {"count": 5}, "id": 3}');
      expect(Object.keys(answer).sort()).toEqual(['id', 'jsonrpc', 'result']);
      expect(answer).toMatchObject({ jsonrpc: '2.0', id: 3 });
      expect(Array.isArray(answer.result)).toBe(true);
    });

    it('rpc call with positional params is refused with -32602 (params are named)', async () => {
      const answer = await exchange('{"jsonrpc": "2.0", "method": "get_recent", "params": [5], "id": 4}');
      expect(answer).toEqual({
        jsonrpc: '2.0',
        id: 4,
        error: { code: ErrorCodes.InvalidParams, message: 'params must be an object of named parameters', data: { expected: 'object' } },
      });
    });

    it('a notification of a real method is executed but not answered', async () => {
      const before = (await suite.socket.call('to_dict')).count;
      await expectNoAnswer('{"jsonrpc": "2.0", "method": "create_task", "params": {"description": "from a notification", "mode": "autonomous", "steps": []}}');
      // A notification is not acknowledged, so its commit may land after later answers.
      const after = await waitFor(async () => {
        const dict = await suite.socket.call('to_dict');
        return dict.count > before && dict;
      }, 10_000, 'the notified task');
      expect(after.count).toBe(before + 1);
      expect(after.tasks.at(-1).description).toBe('from a notification');
    });

    it('a mixed batch of daemon methods: results and errors, each under its id', async () => {
      const created = await suite.socket.call('create_task', { description: 'batch target', mode: 'autonomous', steps: ['a'] });
      const text = JSON.stringify([
        { jsonrpc: '2.0', method: 'get_task', params: { task_id: created.task_id }, id: 'task' },
        { jsonrpc: '2.0', method: 'status' },
        { jsonrpc: '2.0', method: 'get_task', params: { task_id: 'task_0_000000' }, id: 'missing' },
        { foo: 'boo' },
        { jsonrpc: '2.0', method: 'get_recent', params: { count: 0 }, id: 'bad-count' },
        { jsonrpc: '2.0', method: 'get_data', id: 9 },
      ]);
      const answer: any[] = await exchange(text);
      expect(answer).toHaveLength(5);
      const byId = new Map(answer.map((one) => [one.id, one]));
      expect(byId.get('task').result.task_id).toBe(created.task_id);
      expect(byId.get('missing').error).toEqual({ code: ErrorCodes.TaskNotFound, message: 'no task task_0_000000', data: { task_id: 'task_0_000000' } });
      expect(byId.get(null)).toEqual({ jsonrpc: '2.0', id: null, error: invalidRequest });
      expect(byId.get('bad-count').error.code).toBe(ErrorCodes.InvalidParams);
      expect(byId.get(9)).toEqual({ jsonrpc: '2.0', id: 9, error: methodNotFound });
    });

    it('a batch holding one request is still answered with an array', async () => {
      const answer = await exchange('[{"jsonrpc": "2.0", "method": "status", "id": 1}]');
      expect(Array.isArray(answer)).toBe(true);
      expect(answer).toHaveLength(1);
      expect(answer[0].result.machine_id).toBe('test-machine');
    });
  });

  describe('Request objects', () => {
    // The id is echoed when it can be read from the object, else null (spec §5).
    it.each([
      ['null', 'null', null],
      ['a number', '0', null],
      ['a string', '"status"', null],
      ['no jsonrpc member', '{"method": "status", "id": 1}', 1],
      ['jsonrpc "1.0"', '{"jsonrpc": "1.0", "method": "status", "id": 1}', 1],
      ['no method', '{"jsonrpc": "2.0", "id": 1}', 1],
      ['params null', '{"jsonrpc": "2.0", "method": "status", "params": null, "id": 1}', 1],
      ['params a string', '{"jsonrpc": "2.0", "method": "status", "params": "x", "id": 1}', 1],
    ])('%s is an Invalid Request', async (_what, text, id) => {
      expect(await exchange(text)).toEqual({ jsonrpc: '2.0', error: invalidRequest, id });
    });

    it('an id that is not a string, number or null is refused and not echoed', async () => {
      expect(await exchange('{"jsonrpc": "2.0", "method": "status", "id": {}}')).toEqual({ jsonrpc: '2.0', error: invalidRequest, id: null });
      expect(await exchange('{"jsonrpc": "2.0", "method": "status", "id": true}')).toEqual({ jsonrpc: '2.0', error: invalidRequest, id: null });
    });

    it('[null] is a batch of one Invalid Request', async () => {
      expect(await exchange('[null]')).toEqual([{ jsonrpc: '2.0', error: invalidRequest, id: null }]);
    });

    it('string, number and null ids are echoed as given', async () => {
      for (const id of ['abc', 42, 1.5, null]) {
        const answer = await exchange(JSON.stringify({ jsonrpc: '2.0', method: 'status', id }));
        expect(answer.id).toBe(id);
        expect(answer.result.machine_id).toBe('test-machine');
        expect(answer).not.toHaveProperty('error');
      }
    });

    it('a plan nested too deep for the daemon is refused as invalid params, and the daemon stays up', async () => {
      const deepPlan = `${'['.repeat(50_000)}${']'.repeat(50_000)}`;
      const answer = await exchange(`{"jsonrpc":"2.0","id":"deep","method":"create_task","params":{"description":"d","mode":"autonomous","steps":[${deepPlan}]}}`);
      expect(answer.error.code).toBe(ErrorCodes.InvalidParams);
      expect(answer.error.data.issues).toEqual([{ field: 'steps', message: 'must not nest deeper than 64 levels' }]);
      expect((await suite.socket.call('status')).machine_id).toBe('test-machine');
    });
  });
});

describe('WebSocket message size cap', () => {
  it('an oversize frame closes that connection with 1009; the daemon stays up and its data is unchanged', async () => {
    const daemon = await startDaemon({ args: ['--max-message-bytes', '4096'] });
    const writer = await openRawSocket(daemon.socketPath);
    const created = await writer.call('create_task', { description: 'before the big frame', mode: 'autonomous', steps: [] });
    await writer.call('log_step', { task_id: created.task_id, step_num: 1, command: 'ls', status: 'success', output: 'fits' });
    const before = await writer.call('to_dict');
    const lastSeqBefore = (await writer.call('status')).last_seq;

    const big = await openRawSocket(daemon.socketPath);
    const closed = new Promise<number>((resolve) => big.ws.once('close', (code) => resolve(code)));
    big.send(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'log_step', params: { task_id: created.task_id, step_num: 2, command: 'cat', status: 'success', output: 'x'.repeat(5000) } }));
    expect(await closed).toBe(1009);

    expect(await writer.call('to_dict')).toEqual(before);
    expect((await writer.call('status')).last_seq).toBe(lastSeqBefore);
    const fresh = await openRawSocket(daemon.socketPath);
    expect((await fresh.call('get_task', { task_id: created.task_id })).steps).toHaveLength(1);
    writer.close();
    fresh.close();

    expect(await daemon.stop()).toEqual({ code: 0, signal: null });
    // The file's tasks are the answer's (a step's writer that is its task's reads "task" there).
    const file = JSON.parse(readFileSync(daemon.dataFile, 'utf8')) as DataFileV2;
    expect(dataFileContent(file, sha256Hex).tasks).toEqual(before.tasks);
  });
});
