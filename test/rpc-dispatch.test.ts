import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ErrorCodes, RpcError } from '../protocol/errors.js';
import { log } from '../node/log.js';
import { RpcDispatcher } from '../node/rpc-dispatch.js';

// The dispatcher in-process, for what no client can provoke in the daemon: a method that throws.
const failing = { name: 'fails', params: z.strictObject({ how: z.enum(['plain', 'rpc']) }) };

function dispatcher(): RpcDispatcher<null> {
  const rpc = new RpcDispatcher<null>(log);
  rpc.register(failing, ({ how }) => {
    if (how === 'rpc') throw new RpcError(ErrorCodes.TaskNotFound, 'no task t1', { task_id: 't1' });
    throw new Error('secret detail at /var/lib/taskhistory');
  });
  return rpc;
}

const call = (how: string) => JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'fails', params: { how } });

describe('RpcDispatcher error mapping', () => {
  it('answers -32603 "Internal error" for an unexpected exception, with neither its message nor a stack', async () => {
    const answer = JSON.parse((await dispatcher().handleText(call('plain'), null)) as string);
    expect(answer).toEqual({ jsonrpc: '2.0', id: 7, error: { code: ErrorCodes.InternalError, message: 'Internal error' } });
  });

  it('passes a deliberate RpcError through with its code, message and data', async () => {
    const answer = JSON.parse((await dispatcher().handleText(call('rpc'), null)) as string);
    expect(answer).toEqual({ jsonrpc: '2.0', id: 7, error: { code: ErrorCodes.TaskNotFound, message: 'no task t1', data: { task_id: 't1' } } });
  });

  it('refuses everything, executing nothing, once told the daemon is stopping', async () => {
    const rpc = dispatcher();
    rpc.refuseAll = new RpcError(ErrorCodes.ShuttingDown);
    const answer = JSON.parse((await rpc.handleText(call('plain'), null)) as string);
    expect(answer.error.code).toBe(ErrorCodes.ShuttingDown);
  });
});
