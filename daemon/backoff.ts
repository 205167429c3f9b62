const BACKOFF_BASE_MS = 250;

/** Exponential backoff with full jitter: a uniformly random wait up to min(cap, base * 2^failures). */
export function backoffDelay(failures: number, capMs: number): number {
  return Math.round(Math.random() * Math.min(capMs, BACKOFF_BASE_MS * 2 ** failures));
}
