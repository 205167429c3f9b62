import type { Duplex } from 'node:stream';

/** The refusals our servers write on a raw socket, before or instead of a WebSocket upgrade. */
const REASONS = {
  400: 'Bad Request',
  401: 'Unauthorized',
  404: 'Not Found',
  408: 'Request Timeout',
  426: 'Upgrade Required',
  431: 'Request Header Fields Too Large',
  503: 'Service Unavailable',
} as const;

export type RefusalStatus = keyof typeof REASONS;

/** A socket that has not ended in this long after its refusal is destroyed (it may never read). */
const REFUSAL_LINGER_MS = 2000;

/**
 * Writes a complete HTTP/1.1 refusal and closes the connection. Safe on any socket state: a
 * socket already closed or not writable is simply destroyed.
 */
export function refuseHttp(socket: Duplex, status: RefusalStatus, body = '', headers: Record<string, string> = {}): void {
  if (socket.destroyed) return;
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const lines = [`HTTP/1.1 ${status} ${REASONS[status]}`, 'Connection: close', 'Content-Type: text/plain; charset=utf-8', `Content-Length: ${Buffer.byteLength(body)}`];
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
  socket.end(`${lines.join('\r\n')}\r\n\r\n${body}`);
  setTimeout(() => socket.destroy(), REFUSAL_LINGER_MS).unref();
}

/**
 * A request target as a URL, or null when it is not an absolute path a server can route (`//`,
 * `http://host/`, `*`, bytes the URL parser refuses): answer those 400, never throw.
 */
export function requestTarget(target: string | undefined): URL | null {
  if (target === undefined || !target.startsWith('/') || target.startsWith('//')) return null;
  try {
    return new URL(target, 'http://localhost');
  } catch {
    return null;
  }
}

/** The path of a request target, or null as for requestTarget. */
export function requestPath(target: string | undefined): string | null {
  return requestTarget(target)?.pathname ?? null;
}

/** The status for an HTTP parser error on a connection: 431 for oversize headers, 408 for a request too slow, else 400. */
export function parserErrorStatus(error: NodeJS.ErrnoException): RefusalStatus {
  if (error.code === 'HPE_HEADER_OVERFLOW') return 431;
  return error.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
}
