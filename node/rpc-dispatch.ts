import pLimit from 'p-limit';
import type { z } from 'zod';
import { ErrorCodes, ErrorMessages, RpcError } from '../protocol/errors.js';
import type { MethodDescriptor } from '../protocol/methods.js';
import type { Logger } from './log.js';
import { parseStrictJson, type JsonPath, type JsonProblem } from './strict-json.js';

type Id = string | number | null;

interface Request {
  jsonrpc: '2.0';
  method: string;
  params?: object;
  id?: Id;
}

interface Response {
  jsonrpc: '2.0';
  id: Id;
  result?: unknown;
  error?: { code: number; message: string; data?: unknown };
}

type Handler<Context> = (params: unknown, context: Context) => unknown;

/** Bounds on one batch; see the README's security section. */
export interface BatchLimits {
  /** A longer batch is refused whole, nothing executed (1003 with `data.limit`). */
  maxEntries: number;
  /** Once the answer holds this much, the calls not yet started are refused unexecuted (1003). */
  maxAnswerBytes: number;
  /** Calls of one batch running at the same time. */
  concurrency: number;
}

export const DEFAULT_BATCH_LIMITS: BatchLimits = { maxEntries: 1000, maxAnswerBytes: 16 * 1024 * 1024, concurrency: 32 };

/**
 * JSON-RPC 2.0 dispatch over text messages, to the letter of the specification. Each message is
 * parsed once (strictly: duplicate keys and lone surrogates are refused, see strict-json.ts) and
 * each request validated once: its shape here, its params by its descriptor's schema (-32602 with
 * field details). Batches are always answered with an array, never for notifications only, and
 * are bounded (BatchLimits). Only our RpcErrors reach a client; anything else is -32603 without
 * its message.
 */
export class RpcDispatcher<Context> {
  private readonly methods = new Map<string, Handler<Context>>();
  private readonly limits: BatchLimits;
  /** Set while the daemon stops: every request is refused, none executed. */
  refuseAll: RpcError | null = null;

  constructor(
    private readonly log: Logger,
    limits: Partial<BatchLimits> = {},
  ) {
    this.limits = { ...DEFAULT_BATCH_LIMITS, ...limits };
  }

  /** Registers a method whose params are validated by its descriptor's schema. */
  register<P extends z.ZodType, R>(
    descriptor: MethodDescriptor<P, R>,
    handler: (params: z.output<P>, context: Context) => R | Promise<R>,
  ): void {
    this.methods.set(descriptor.name, (params, context) => {
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
    let problems: JsonProblem[];
    try {
      ({ value: message, problems } = parseStrictJson(text));
    } catch {
      return JSON.stringify(errorResponse(null, ErrorCodes.ParseError));
    }
    if (!Array.isArray(message)) {
      const response = await this.handleOne(message, problems, context);
      return response ? JSON.stringify(response) : null;
    }
    if (message.length === 0) return JSON.stringify(errorResponse(null, ErrorCodes.InvalidRequest));
    if (message.length > this.limits.maxEntries) {
      return JSON.stringify(errorResponse(null, ErrorCodes.PayloadTooLarge, `Batch of ${message.length} requests is over the limit of ${this.limits.maxEntries}; send it in smaller batches`, { limit: this.limits.maxEntries, entries: message.length }));
    }
    return this.handleBatch(message, problems, context);
  }

  /** Runs a batch's calls in order, a bounded number at once, each answer serialized as it comes. */
  private async handleBatch(batch: unknown[], problems: JsonProblem[], context: Context): Promise<string | null> {
    const answers: (string | null)[] = new Array(batch.length).fill(null);
    let answerBytes = 0;
    const limit = pLimit(this.limits.concurrency);
    await Promise.all(
      batch.map((one, index) =>
        limit(async () => {
          // Yield first, so that a long batch never holds the event loop from other clients.
          await new Promise((resolve) => setImmediate(resolve));
          const response =
            answerBytes >= this.limits.maxAnswerBytes
              ? notExecuted(one, this.limits.maxAnswerBytes)
              : await this.handleOne(one, problemsUnder(problems, index), context);
          if (response === null) return;
          const text = JSON.stringify(response);
          answerBytes += text.length;
          answers[index] = text;
        }),
      ),
    );
    const texts = answers.filter((answer): answer is string => answer !== null);
    return texts.length ? `[${texts.join(',')}]` : null;
  }

  private async handleOne(message: unknown, problems: JsonProblem[], context: Context): Promise<Response | null> {
    if (!isRequest(message)) {
      const id = message !== null && typeof message === 'object' && isId((message as { id?: unknown }).id) ? (message as { id: Id }).id : null;
      return errorResponse(id, ErrorCodes.InvalidRequest);
    }
    const isNotification = !('id' in message);
    const id = message.id ?? null;
    const answer = (response: Response) => (isNotification ? null : response);
    if (problems.length) return answer(ambiguityResponse(id, problems));
    if (this.refuseAll) return answer({ jsonrpc: '2.0', id, error: { code: this.refuseAll.code, message: this.refuseAll.message } });
    const handler = this.methods.get(message.method);
    if (!handler) return answer(errorResponse(id, ErrorCodes.MethodNotFound));
    if (message.params !== undefined && Array.isArray(message.params)) {
      return answer(errorResponse(id, ErrorCodes.InvalidParams, 'params must be an object of named parameters', { expected: 'object' }));
    }
    try {
      return answer({ jsonrpc: '2.0', id, result: (await handler(message.params, context)) ?? null });
    } catch (error) {
      if (error instanceof RpcError) {
        return answer({ jsonrpc: '2.0', id, error: { code: error.code, message: error.message, ...(error.data !== undefined && { data: error.data }) } });
      }
      this.log.error('internal error in a method', { method: message.method, error: error instanceof Error ? (error.stack ?? error.message) : String(error) });
      return answer(errorResponse(id, ErrorCodes.InternalError));
    }
  }
}

/** The problems found in entry `index` of a batch, with paths relative to that entry. */
function problemsUnder(problems: JsonProblem[], index: number): JsonProblem[] {
  return problems.filter((problem) => problem.path[0] === index).map((problem) => ({ ...problem, path: problem.path.slice(1) }));
}

/**
 * A request whose text means more than one thing: under `params` it is -32602 naming each field;
 * in the request object itself (two `method`s, two `id`s) it is not a valid request (-32600).
 */
function ambiguityResponse(id: Id, problems: JsonProblem[]): Response {
  const inParams = problems.filter((problem) => problem.path[0] === 'params' && problem.path.length > 1);
  if (inParams.length < problems.length) {
    return errorResponse(null, ErrorCodes.InvalidRequest, ErrorMessages[ErrorCodes.InvalidRequest], { issues: problems.map(issue) });
  }
  const issues = inParams.map((problem) => issue({ ...problem, path: problem.path.slice(1) }));
  return errorResponse(id, ErrorCodes.InvalidParams, `Invalid params: ${issues.map((i) => `${i.field}: ${i.message}`).join('; ')}`, { issues });
}

function issue(problem: JsonProblem): { field: string; message: string } {
  return { field: fieldName(problem.path), message: problem.message };
}

function fieldName(path: JsonPath): string {
  return path.map((part, index) => (typeof part === 'number' ? `[${part}]` : index === 0 ? part : `.${part}`)).join('');
}

function notExecuted(message: unknown, limit: number): Response | null {
  if (!isRequest(message) || !('id' in message)) return isRequest(message) ? null : errorResponse(null, ErrorCodes.InvalidRequest);
  return errorResponse(message.id ?? null, ErrorCodes.PayloadTooLarge, `Not executed: the batch's answer reached the limit of ${limit} bytes; send this call again on its own or in a smaller batch`, { limit, executed: false });
}

function isId(id: unknown): id is Id {
  return id === null || typeof id === 'string' || (typeof id === 'number' && Number.isFinite(id));
}

function isRequest(message: unknown): message is Request {
  if (message === null || typeof message !== 'object' || Array.isArray(message)) return false;
  const m = message as Record<string, unknown>;
  if (m.jsonrpc !== '2.0' || typeof m.method !== 'string') return false;
  if ('params' in m && (m.params === null || typeof m.params !== 'object')) return false;
  if ('id' in m && !isId(m.id)) return false;
  return true;
}

function errorResponse(id: Id, code: (typeof ErrorCodes)[keyof typeof ErrorCodes], message: string = ErrorMessages[code], data?: unknown): Response {
  return { jsonrpc: '2.0', id, error: { code, message, ...(data !== undefined && { data }) } };
}
