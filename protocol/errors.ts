/**
 * Every error code a client of the daemon or of the cloud endpoint can see.
 *
 * -32768..-32000 is reserved by JSON-RPC 2.0; we use only the five codes it defines there.
 * Application codes are positive integers, one per cause, so a caller can switch on them.
 */
export const ErrorCodes = {
  // JSON-RPC 2.0
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  InternalError: -32603,

  // Daemon (1000..1099)
  /** No task with that task_id (never created, or trimmed away by max_tasks). */
  TaskNotFound: 1001,
  /** The task is completed/failed/aborted: the log is append-only, it takes no more steps. */
  TaskFinished: 1002,
  /** A message, line or field is over its size cap. */
  PayloadTooLarge: 1003,
  /** The record could not be made durable (ENOSPC, EIO, EACCES...): nothing was acknowledged. */
  StorageFailure: 1004,
  /** The daemon is stopping: the request was not executed. */
  ShuttingDown: 1005,
  /** No subscription with that id on this connection. */
  SubscriptionNotFound: 1006,
  /** A connection or buffer bound was reached and the connection is being closed; `data.reason` says which. */
  ConnectionLimit: 1007,
  /**
   * The one-shot answer would be larger than `--max-message-bytes`: nothing was built or sent and the
   * connection stays usable. `data`: `{limit, estimated_bytes, paged_form}`; ask again in the paged form.
   */
  AnswerTooLarge: 1008,

  // Cloud endpoint (2000..2099)
  /** Missing or unknown bearer token. */
  Unauthorized: 2001,
  /** The token may not do this (another machine's records, or an admin token pushing). */
  Forbidden: 2002,
  /** The batch does not continue the chain held for the machine; `data.reason` says how. */
  ChainMismatch: 2003,
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export const ErrorMessages: Record<ErrorCode, string> = {
  [ErrorCodes.ParseError]: 'Parse error',
  [ErrorCodes.InvalidRequest]: 'Invalid Request',
  [ErrorCodes.MethodNotFound]: 'Method not found',
  [ErrorCodes.InvalidParams]: 'Invalid params',
  [ErrorCodes.InternalError]: 'Internal error',
  [ErrorCodes.TaskNotFound]: 'Task not found',
  [ErrorCodes.TaskFinished]: 'Task already finished',
  [ErrorCodes.PayloadTooLarge]: 'Payload too large',
  [ErrorCodes.StorageFailure]: 'Storage failure: nothing was recorded',
  [ErrorCodes.ShuttingDown]: 'Daemon is shutting down: request not executed',
  [ErrorCodes.SubscriptionNotFound]: 'Subscription not found',
  [ErrorCodes.ConnectionLimit]: 'Connection limit reached',
  [ErrorCodes.AnswerTooLarge]: 'Answer too large for one message: ask for it in pages',
  [ErrorCodes.Unauthorized]: 'Unauthorized',
  [ErrorCodes.Forbidden]: 'Forbidden',
  [ErrorCodes.ChainMismatch]: 'Batch does not continue the stored chain',
};

/** An error that crosses the wire as a JSON-RPC error object. */
export class RpcError extends Error {
  constructor(
    readonly code: number,
    message: string = ErrorMessages[code as ErrorCode] ?? 'Error',
    readonly data?: unknown,
  ) {
    super(message);
    this.name = 'RpcError';
  }
}
