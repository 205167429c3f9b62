/** Defaults shared by the daemon, its clients and the cloud endpoint. */
export const DEFAULT_MAX_TASKS = 100;
export const DEFAULT_RECENT_COUNT = 10;
export const MAX_RECENT_COUNT = 1000;

/** Size caps in UTF-8 bytes; a longer value is stored truncated with a marker and its original length. */
export const DEFAULT_FIELD_CAP_BYTES = 64 * 1024; // output, error, recovery, each
export const DEFAULT_DESCRIPTION_CAP_BYTES = 4 * 1024;
export const DEFAULT_COMMAND_CAP_BYTES = 64 * 1024;
/** A planned-steps array larger than this (serialized) is refused with PayloadTooLarge. */
export const DEFAULT_PLAN_CAP_BYTES = 1024 * 1024;
/** One WebSocket message or newline-delimited line. */
export const DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

/** Cloud sync: records and bytes per pushed batch. */
export const CLOUD_BATCH_RECORDS = 2000;
export const CLOUD_BATCH_BYTES = 4 * 1024 * 1024;
export const DEFAULT_CLOUD_RETRY_MAX_MS = 30_000;
export const DEFAULT_RESTORE_TIMEOUT_MS = 10_000;
export const CLOUD_PULL_LIMIT_MAX = 5000;

/** The marker a truncated text ends with; names the original length. */
export function truncationMarker(originalBytes: number): string {
  return `\n…[truncated by taskhistory: ${originalBytes} bytes in all]`;
}
