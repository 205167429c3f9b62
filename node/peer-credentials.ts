import { readFileSync, readlinkSync } from 'node:fs';
import type { Socket } from 'node:net';
import { nativeAddon } from './native.js';

/** Who is at the other end of a Unix socket, as the kernel recorded it at connect time. */
export interface PeerCredentials {
  uid: number;
  gid: number;
  pid: number;
}

/** What /proc says a process is. null where it cannot be read: see processIdentity. */
export interface ProcessIdentity {
  /** The kernel's task name (/proc/PID/comm, at most 15 bytes); any process may set its own. */
  comm: string | null;
  /** The executable's path (/proc/PID/exe), " (deleted)" appended when the file was removed. */
  exe: string | null;
}

/** The file descriptor under a connected net.Socket; Node keeps it on the internal handle. */
export function socketDescriptor(socket: Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('the socket has no file descriptor (closed, or not a Unix socket of this process)');
  return fd;
}

/** SO_PEERCRED of a connected Unix stream socket. */
export function peerCredentialsOf(socket: Socket): PeerCredentials {
  return nativeAddon().peerCredentials(socketDescriptor(socket));
}

function readOrNull(read: () => string): string | null {
  try {
    return read();
  } catch {
    return null;
  }
}

/**
 * comm and exe of a live process. Each is null when the process is gone or /proc hides it:
 * `hidepid`/ProtectProc= hide other users' processes, and reading another uid's `exe` takes
 * CAP_SYS_PTRACE (the kernel's ptrace read check), while `comm` is readable by anyone.
 */
export function processIdentity(pid: number): ProcessIdentity {
  if (!Number.isInteger(pid) || pid <= 0) throw new RangeError(`processIdentity: ${pid} is not a process id`);
  return {
    comm: readOrNull(() => readFileSync(`/proc/${pid}/comm`, 'utf8').replace(/\n$/, '')),
    exe: readOrNull(() => readlinkSync(`/proc/${pid}/exe`)),
  };
}

/**
 * The supplementary groups of a live process (the `Groups:` line of /proc/PID/status, which the
 * kernel writes); null when the process is gone or /proc hides it.
 */
export function processGroups(pid: number): number[] | null {
  if (!Number.isInteger(pid) || pid <= 0) throw new RangeError(`processGroups: ${pid} is not a process id`);
  const status = readOrNull(() => readFileSync(`/proc/${pid}/status`, 'utf8'));
  const groups = status === null ? null : /^Groups:[ \t]*(.*)$/m.exec(status);
  if (!groups) return null;
  return groups[1].trim() === '' ? [] : groups[1].trim().split(/\s+/).map(Number);
}
