import { JSONRPCErrorException, JSONRPCServer, type JSONRPCRequest, type JSONRPCResponse } from 'json-rpc-2.0';
import type { z } from 'zod';
import { ErrorCodes, ErrorMessages, RpcError } from '../protocol/errors.js';
import type { MethodDescriptor } from '../protocol/methods.js';
import type { Logger } from './log.js';

/**
 * JSON-RPC 2.0 dispatch over text messages, to the letter of the specification. json-rpc-2.0
 * keeps the method table and calls handlers; everything it gets wrong (see library-facts.md) is
 * handled here: parse errors, invalid requests and their ids, batches (always answered with an
 * array, never for notifications only), params validation (-32602 with field details), and error
 * mapping (only our RpcErrors pass; anything else is -32603 without its message).
 */
export class RpcDispatcher<Context> {
  private readonly server = new JSONRPCServer<Context>({ errorListener: () => undefined });
  /** Set while the daemon stops: every request is refused, none executed. */
  refuseAll: RpcError | null = null;

  constructor(log: Logger) {
    this.server.mapErrorToJSONRPCErrorResponse = (id, error: unknown) => {
      if (error instanceof RpcError || error instanceof JSONRPCErrorException) {
        return { jsonrpc: '2.0', id, error: { code: error.code, message: error.message, ...(error.data !== undefined && { data: error.data }) } };
      }
      log.error('internal error in a method', { error: error instanceof Error ? (error.stack ?? error.message) : String(error) });
      return { jsonrpc: '2.0', id, error: { code: ErrorCodes.InternalError, message: ErrorMessages[ErrorCodes.InternalError] } };
    };
  }

  /** Registers a method whose params are validated by its descriptor's schema. */
  register<P extends z.ZodType, R>(
    descriptor: MethodDescriptor<P, R>,
    handler: (params: z.output<P>, context: Context) => R | Promise<R>,
  ): void {
    this.server.addMethod(descriptor.name, (params: unknown, context: Context) => {
      if (params !== undefined && (params === null || typeof params !== 'object' || Array.isArray(params))) {
        throw new RpcError(ErrorCodes.InvalidParams, 'params must be an object of named parameters', { expected: 'object' });
      }
      const parsed = descriptor.params.safeParse(params ?? {});
      if (!parsed.success) {
        const issues = parsed.error.issues.map((issue) => ({
          field: issue.path.join('.') || (issue.code === 'unrecognized_keys' ? issue.keys.join(',') : ''),
          message: issue.message,
        }));
        throw new RpcError(ErrorCodes.InvalidParams, `Invalid params: ${issues.map((i) => `${i.field || 'params'}: ${i.message}`).join('; ')}`, { issues });
      }
      return handler(parsed.data, context);
    });
  }

  /** Answers one WebSocket message or newline-delimited line; null when no answer is due. */
  async handleText(text: string, context: Context): Promise<string | null> {
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch {
      return JSON.stringify(errorResponse(null, ErrorCodes.ParseError));
    }
    if (Array.isArray(message)) {
      if (message.length === 0) return JSON.stringify(errorResponse(null, ErrorCodes.InvalidRequest));
      const responses = (await Promise.all(message.map((one) => this.handleOne(one, context)))).filter(
        (response): response is JSONRPCResponse => response !== null,
      );
      return responses.length ? JSON.stringify(responses) : null;
    }
    const response = await this.handleOne(message, context);
    return response ? JSON.stringify(response) : null;
  }

  private async handleOne(message: unknown, context: Context): Promise<JSONRPCResponse | null> {
    if (!isRequest(message)) {
      const id = message !== null && typeof message === 'object' && isId((message as { id?: unknown }).id) ? (message as { id: string | number | null }).id : null;
      return errorResponse(id, ErrorCodes.InvalidRequest);
    }
    const isNotification = !('id' in message);
    if (this.refuseAll) {
      return isNotification ? null : { jsonrpc: '2.0', id: message.id ?? null, error: { code: this.refuseAll.code, message: this.refuseAll.message } };
    }
    const response = await this.server.receive(message, context);
    return isNotification ? null : response;
  }
}

function isId(id: unknown): id is string | number | null {
  return id === null || typeof id === 'string' || (typeof id === 'number' && Number.isFinite(id));
}

function isRequest(message: unknown): message is JSONRPCRequest {
  if (message === null || typeof message !== 'object' || Array.isArray(message)) return false;
  const m = message as Record<string, unknown>;
  if (m.jsonrpc !== '2.0' || typeof m.method !== 'string') return false;
  if ('params' in m && (m.params === null || typeof m.params !== 'object')) return false;
  if ('id' in m && !isId(m.id)) return false;
  return true;
}

function errorResponse(id: string | number | null, code: (typeof ErrorCodes)[keyof typeof ErrorCodes]): JSONRPCResponse {
  return { jsonrpc: '2.0', id, error: { code, message: ErrorMessages[code] } };
}
