import { z } from 'zod';
import { ErrorCodes, RpcError } from '../protocol/errors.js';

export type PagedMethod = 'to_dict' | 'get_recent' | 'get_task';

/** The snapshot the first page fixed: the log as of `asOfSeq`; for to_dict also its task count. */
export interface Snapshot {
  asOfSeq: number;
  count?: number;
}

/** Where the next page starts: the task created at `taskSeq` (or the next kept one), from step `step`, in the snapshot. */
export interface PageCursor extends Snapshot {
  method: PagedMethod;
  taskSeq: number;
  step: number;
}

const seq = z.int().min(0);
const CursorFields = z.strictObject({ m: z.enum(['to_dict', 'get_recent', 'get_task']), a: seq, t: seq, s: seq, c: seq.optional() });

/** The opaque cursor of a page: base64url of a small JSON object. */
export function encodeCursor(cursor: PageCursor): string {
  const fields = { m: cursor.method, a: cursor.asOfSeq, t: cursor.taskSeq, s: cursor.step, c: cursor.count };
  return Buffer.from(JSON.stringify(fields)).toString('base64url');
}

/** The cursor a page of `method` gave out, or -32602 naming `cursor`; `headSeq` bounds what a real one can say. */
export function decodeCursor(text: string, method: PagedMethod, headSeq: number): PageCursor {
  const fields = CursorFields.safeParse(parsedJson(text));
  if (!fields.success) throw invalidCursor('is not a cursor this daemon gave out');
  const { m, a, t, s, c } = fields.data;
  if (m !== method) throw invalidCursor(`is a cursor of ${m}, not of ${method}`);
  if (a > headSeq || t > a || (c === undefined) !== (m !== 'to_dict')) throw invalidCursor('is not a cursor this daemon gave out');
  return { method: m, asOfSeq: a, taskSeq: t, step: s, ...(c !== undefined && { count: c }) };
}

export function invalidCursor(problem: string): RpcError {
  const message = `${problem}; pass null for the first page, then each page's next_cursor`;
  return new RpcError(ErrorCodes.InvalidParams, `Invalid params: cursor: ${message}`, { issues: [{ field: 'cursor', message }] });
}

/** The JSON inside a base64url text, or undefined when it is not exactly that. */
function parsedJson(text: string): unknown {
  const bytes = Buffer.from(text, 'base64url');
  // Buffer skips characters outside the alphabet: a text that does not round-trip is not ours.
  if (bytes.toString('base64url') !== text) return undefined;
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch {
    return undefined;
  }
}
