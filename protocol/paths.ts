import { DATA_FILE_NAME } from './data-file.js';

/** What path resolution reads from the process; passed in so the rules stay pure and testable. */
export interface PathEnvironment {
  env: Readonly<Record<string, string | undefined>>;
  uid: number;
  home: string;
}

export const SYSTEM_SOCKET_PATH = '/run/taskhistory/taskhistoryd.sock';
export const SYSTEM_DATA_DIR = '/var/lib/taskhistory';

/**
 * The daemon's socket, one rule for daemon, SDK and CLI: `--socket` or TASKHISTORY_SOCKET; as root
 * /run/taskhistory/taskhistoryd.sock; else $XDG_RUNTIME_DIR/taskhistory/taskhistoryd.sock; else
 * /tmp/taskhistory-<uid>/taskhistoryd.sock.
 */
export function resolveSocketPath(explicit: string | undefined, where: PathEnvironment): string {
  if (explicit) return explicit;
  if (where.env.TASKHISTORY_SOCKET) return where.env.TASKHISTORY_SOCKET;
  if (where.uid === 0) return SYSTEM_SOCKET_PATH;
  if (where.env.XDG_RUNTIME_DIR) return join(where.env.XDG_RUNTIME_DIR, 'taskhistory', 'taskhistoryd.sock');
  return `/tmp/taskhistory-${where.uid}/taskhistoryd.sock`;
}

/**
 * The data directory: `--data-dir` or TASKHISTORY_DATA_DIR; as root /var/lib/taskhistory; else
 * $XDG_STATE_HOME/taskhistory (default ~/.local/state/taskhistory).
 */
export function resolveDataDir(explicit: string | undefined, where: PathEnvironment): string {
  if (explicit) return explicit;
  if (where.env.TASKHISTORY_DATA_DIR) return where.env.TASKHISTORY_DATA_DIR;
  if (where.uid === 0) return SYSTEM_DATA_DIR;
  const stateHome = where.env.XDG_STATE_HOME || join(where.home, '.local', 'state');
  return join(stateHome, 'taskhistory');
}

export function dataFilePath(dataDir: string): string {
  return join(dataDir, DATA_FILE_NAME);
}

/** The WebSocket URL for a Unix socket path (request path `/`). */
export function socketUrl(socketPath: string): string {
  return `ws+unix://${socketPath}:/`;
}

/** POSIX path join for the absolute, already-normalised parts these rules build. */
function join(...parts: string[]): string {
  return parts.join('/').replace(/\/{2,}/g, '/');
}
