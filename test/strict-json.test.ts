import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../protocol/errors.js';
import { parseStrictJson } from '../node/strict-json.js';
import { daemonWithSocket } from './daemon-harness.js';

describe('parseStrictJson', () => {
  it('finds a duplicate key at any depth, with its path, even when colons inside strings defeat the fast test', () => {
    expect(parseStrictJson('{"a":1,"a":2}').problems).toEqual([{ path: ['a'], message: 'duplicate key "a"' }]);
    expect(parseStrictJson('{"s":"x:y:z","p":{"steps":[{"c":"ls"},{"c":"rm -rf /","c":"ls"}]}}').problems).toEqual([{ path: ['p', 'steps', 1, 'c'], message: 'duplicate key "c"' }]);
    // The same key spelled two ways is still the same key.
    expect(parseStrictJson('{"k":1,"\\u006b":2}').problems).toEqual([{ path: ['k'], message: 'duplicate key "k"' }]);
  });

  it('accepts the same key in different objects, and colons and escaped quotes inside strings', () => {
    expect(parseStrictJson('[{"a":1},{"a":2},{"b":{"a":3}}]').problems).toEqual([]);
    expect(parseStrictJson('{"a":"\\"b\\":1,\\"a\\":2","b":"::"}').problems).toEqual([]);
  });

  it('finds a lone surrogate escape in a value or a key; a pair (an emoji) is fine', () => {
    expect(parseStrictJson('{"o":"ok \\ud800 here"}').problems).toEqual([{ path: ['o'], message: 'the value holds a lone UTF-16 surrogate' }]);
    expect(parseStrictJson('{"x":[1,{"\\udc00":1}]}').problems).toEqual([{ path: ['x', 1, '\udc00'], message: 'the key holds a lone UTF-16 surrogate' }]);
    expect(parseStrictJson('{"o":"\\ud83e\\udd80"}').problems).toEqual([]);
  });

  it('walks nesting 100,000 deep without overflowing the stack', () => {
    const deep = `${'['.repeat(100_000)}${']'.repeat(100_000)}`;
    expect(parseStrictJson(deep).problems).toEqual([]);
    expect(parseStrictJson(`${'{"a":'.repeat(10_000)}{"b":1,"b":2}${'}'.repeat(10_000)}`).problems).toHaveLength(1);
  });

  it('throws SyntaxError on text that is not JSON, as JSON.parse does', () => {
    expect(() => parseStrictJson('{"a":')).toThrow(SyntaxError);
  });
});

describe('the daemon refuses a request that means more than one thing', () => {
  const suite = daemonWithSocket();

  it('a duplicate key in params gets -32602 naming the field, and nothing is recorded', async () => {
    const { socket } = suite;
    const before = (await socket.call('status')).last_seq;
    socket.send('{"jsonrpc":"2.0","id":1,"method":"create_task","params":{"description":"plan","mode":"autonomous","steps":[{"command":"rm -rf /","command":"ls"}]}}');
    const answer = await socket.next();
    expect(answer).toMatchObject({ id: 1, error: { code: ErrorCodes.InvalidParams, data: { issues: [{ field: 'steps[0].command', message: 'duplicate key "command"' }] } } });
    expect(answer.error.message).toContain('steps[0].command');
    expect((await socket.call('status')).last_seq).toBe(before);
  });

  it('a lone surrogate in a field gets -32602 naming it; a real emoji is stored', async () => {
    const { socket } = suite;
    const { task_id } = await socket.call('create_task', { description: 'emoji', mode: 'autonomous', steps: [] });
    const before = (await socket.call('status')).last_seq;
    socket.send(`{"jsonrpc":"2.0","id":2,"method":"log_step","params":{"task_id":"${task_id}","step_num":1,"command":"echo","status":"success","output":"half \\ud83e"}}`);
    expect(await socket.next()).toMatchObject({ id: 2, error: { code: ErrorCodes.InvalidParams, data: { issues: [{ field: 'output', message: 'the value holds a lone UTF-16 surrogate' }] } } });
    expect((await socket.call('status')).last_seq).toBe(before);
    await socket.call('log_step', { task_id, step_num: 1, command: 'echo', status: 'success', output: 'crab 🦀' });
    expect((await socket.call('get_task', { task_id })).steps[0].output).toBe('crab 🦀');
  });

  it('a duplicate in the request itself (two methods) is an invalid request; in a batch only that entry is refused', async () => {
    const { socket } = suite;
    socket.send('{"jsonrpc":"2.0","id":3,"method":"status","method":"to_dict"}');
    expect(await socket.next()).toMatchObject({ id: null, error: { code: ErrorCodes.InvalidRequest, data: { issues: [{ field: 'method' }] } } });
    socket.send('[{"jsonrpc":"2.0","id":4,"method":"status"},{"jsonrpc":"2.0","id":5,"method":"get_recent","params":{"count":1,"count":2}}]');
    const [ok, refused] = await socket.next();
    expect(ok).toMatchObject({ id: 4, result: { machine_id: 'test-machine' } });
    expect(refused).toMatchObject({ id: 5, error: { code: ErrorCodes.InvalidParams, data: { issues: [{ field: 'count' }] } } });
  });
});
