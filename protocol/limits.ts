/** Defaults shared by the daemon, its clients and the cloud endpoint. */
export const DEFAULT_MAX_TASKS = 100;
export const DEFAULT_RECENT_COUNT = 10;
export const MAX_RECENT_COUNT = 1000;

/** Cap on output, error and recovery in UTF-8 bytes, each; a longer value is stored truncated with a marker. */
export const DEFAULT_FIELD_CAP_BYTES = 64 * 1024;
/** One WebSocket message or newline-delimited line. */
export const DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

/** Most records one cloud `pull` answers. */
export const CLOUD_PULL_LIMIT_MAX = 5000;

/** The marker a truncated text ends with; names the original length. */
export function truncationMarker(originalBytes: number): string {
  return `\n…[truncated by taskhistory: ${originalBytes} bytes in all]`;
}
