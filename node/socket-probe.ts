import { lstatSync, unlinkSync } from 'node:fs';
import { connect } from 'node:net';

/** Whether something accepts connections on the socket (refused or missing: no). */
export function socketAccepts(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect(socketPath);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', (error: NodeJS.ErrnoException) => resolve(error.code !== 'ECONNREFUSED' && error.code !== 'ENOENT'));
  });
}

export class SocketInUse extends Error {}

/**
 * The one stale-socket rule: a socket file nobody accepts on (a daemon killed without cleaning
 * up) is removed and true returned; a live one, or a file that is not a socket, throws SocketInUse
 * naming the path; nothing there returns false.
 */
export async function removeStaleSocket(socketPath: string): Promise<boolean> {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(socketPath).isSocket();
  } catch {
    return false;
  }
  if (!isSocket) throw new SocketInUse(`${socketPath} exists and is not a socket; move it away or pass another --socket`);
  if (await socketAccepts(socketPath)) throw new SocketInUse(`another taskhistoryd is already serving on ${socketPath}; stop it first or pass another --socket`);
  unlinkSync(socketPath);
  return true;
}
