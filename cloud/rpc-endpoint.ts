import {
  createJSONRPCErrorResponse,
  JSONRPCErrorException,
  JSONRPCServer,
  type JSONRPCRequest,
  type JSONRPCResponse,
} from 'json-rpc-2.0';
import { z } from 'zod';
import { ErrorCodes, ErrorMessages, RpcError } from '../protocol/errors.js';
import type { MethodDescriptor } from '../protocol/methods.js';
import { log } from './log.js';

/**
 * JSON-RPC 2.0 dispatch over json-rpc-2.0's JSONRPCServer, with its deviations from the spec
 * wrapped: text that is not JSON (-32700), messages that are not requests (-32600, including null,
 * 0 and non-string methods), batches handled here (always answered with an array), params checked
 * against the method's zod schema (-32602 with the issues in `data`), and any error that is not a
 * deliberate RpcError answered -32603 without its message.
 */
export class RpcEndpoint<Context> {
  private readonly server = new JSONRPCServer<Context>({ errorListener: () => undefined });

  constructor() {
    this.server.mapErrorToJSONRPCErrorResponse = (id, error) => {
      if (error instanceof JSONRPCErrorException) return createJSONRPCErrorResponse(id, error.code, error.message, error.data);
      log.error('request failed', { error: error instanceof Error ? (error.stack ?? error.message) : String(error) });
      return createJSONRPCErrorResponse(id, ErrorCodes.InternalError, ErrorMessages[ErrorCodes.InternalError]);
    };
  }

  addMethod<P extends z.ZodType, R>(
    descriptor: MethodDescriptor<P, R>,
    handler: (params: z.output<P>, context: Context) => Promise<R> | R,
  ): void {
    this.server.addMethod(descriptor.name, async (params: unknown, context: Context) => {
      const parsed = descriptor.params.safeParse(params ?? {});
      if (!parsed.success) {
        throw new JSONRPCErrorException(ErrorMessages[ErrorCodes.InvalidParams], ErrorCodes.InvalidParams, {
          issues: parsed.error.issues.map((issue) => ({ path: issue.path.join('.'), message: issue.message })),
        });
      }
      try {
        return await handler(parsed.data, context);
      } catch (error) {
        if (error instanceof RpcError) throw new JSONRPCErrorException(error.message, error.code, error.data);
        throw error;
      }
    });
  }

  /** Answers one WebSocket message: the response text, or null when nothing is owed (notifications only). */
  async handle(text: string, context: Context): Promise<string | null> {
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch {
      return JSON.stringify(errorResponse(null, ErrorCodes.ParseError));
    }
    if (!Array.isArray(message)) {
      const response = await this.handleOne(message, context);
      return response && JSON.stringify(response);
    }
    if (message.length === 0) return JSON.stringify(errorResponse(null, ErrorCodes.InvalidRequest));
    const responses = (await Promise.all(message.map((item) => this.handleOne(item, context)))).filter(
      (response): response is JSONRPCResponse => response !== null,
    );
    return responses.length > 0 ? JSON.stringify(responses) : null;
  }

  private async handleOne(message: unknown, context: Context): Promise<JSONRPCResponse | null> {
    if (!isRequest(message)) {
      const id = (message as { id?: unknown } | null)?.id;
      return errorResponse(isValidId(id) ? id : null, ErrorCodes.InvalidRequest);
    }
    return this.server.receive(message, context);
  }
}

function errorResponse(id: string | number | null, code: number): JSONRPCResponse {
  return createJSONRPCErrorResponse(id, code, ErrorMessages[code as keyof typeof ErrorMessages]);
}

function isValidId(id: unknown): id is string | number | null {
  return id === null || typeof id === 'string' || (typeof id === 'number' && Number.isFinite(id));
}

function isRequest(message: unknown): message is JSONRPCRequest {
  if (message === null || typeof message !== 'object' || Array.isArray(message)) return false;
  const m = message as Record<string, unknown>;
  return (
    m.jsonrpc === '2.0' &&
    typeof m.method === 'string' &&
    (!('id' in m) || isValidId(m.id)) &&
    (m.params === undefined || (typeof m.params === 'object' && m.params !== null))
  );
}
