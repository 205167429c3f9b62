import { spawn } from 'node:child_process';
import { log } from '../node/log.js';

/**
 * The daemon's side of systemd's service protocols: socket activation (sd_listen_fds), readiness
 * and status (sd_notify) and the watchdog. Without systemd (no LISTEN_FDS, no NOTIFY_SOCKET)
 * every function here is a no-op.
 *
 * Notifications go through the `systemd-notify` tool: Node has no Unix datagram sockets, and the
 * tool ships with every systemd. Its messages come from its own pid, not the daemon's, so the unit
 * needs `NotifyAccess=all`. Since systemd 246 it waits (BARRIER=1) until the manager has processed
 * the message before it exits, so the manager still finds it in the service's cgroup.
 */

/** The first passed descriptor (SD_LISTEN_FDS_START). */
const FIRST_LISTEN_FD = 3;
const NOTIFY_TOOL = 'systemd-notify';
/** systemd-notify's own barrier wait is 5 s; past this we stop waiting so shutdown stays bounded. */
const NOTIFY_TIMEOUT_MS = 6000;

/**
 * The listening socket systemd passed (fd 3) when LISTEN_PID names this process, else null.
 * Clears LISTEN_* from the environment either way, as sd_listen_fds does, so that children do not
 * take the descriptor for theirs.
 */
export function inheritedListenFd(env: NodeJS.ProcessEnv = process.env): number | null {
  const forThisProcess = env.LISTEN_PID === String(process.pid);
  const count = Number(env.LISTEN_FDS);
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  if (!forThisProcess || !Number.isInteger(count) || count < 1) return null;
  if (count > 1) log.warn('systemd passed more than one socket; serving only the first', { listen_fds: count });
  return FIRST_LISTEN_FD;
}

let toolMissingReported = false;

/**
 * Sends `VARIABLE=VALUE` assignments (READY=1, STOPPING=1, STATUS=...) to the service manager.
 * Resolves once systemd has them, or after a bounded wait; never rejects. Await it before
 * exiting, so that STOPPING=1 is sent while the daemon is still alive. No-op without NOTIFY_SOCKET.
 */
export function notifySystemd(...assignments: string[]): Promise<void> {
  if (!process.env.NOTIFY_SOCKET || assignments.length === 0) return Promise.resolve();
  return new Promise((resolve) => {
    const child = spawn(NOTIFY_TOOL, assignments, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => {
      log.warn('systemd-notify did not finish; carrying on without waiting', { sent: assignments.join(' '), pid: child.pid });
      child.kill('SIGKILL');
      resolve();
    }, NOTIFY_TIMEOUT_MS);
    timer.unref();
    child.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (!toolMissingReported) {
        toolMissingReported = true;
        log.warn(`cannot run ${NOTIFY_TOOL}, so systemd gets no readiness or watchdog notifications; install systemd's tools or use Type=simple`, { error: error.code ?? error.message });
      }
      resolve();
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      if (code !== 0) log.warn('systemd-notify failed', { sent: assignments.join(' '), exit_code: code, stderr: stderr.trim() });
      resolve();
    });
  });
}

/**
 * When the unit sets WatchdogSec (WATCHDOG_USEC, for this process per WATCHDOG_PID), sends
 * WATCHDOG=1 every half period from the event loop, so a stuck loop gets the service restarted.
 * Returns the function that stops the pings, or null when no watchdog is configured.
 */
export function startWatchdog(env: NodeJS.ProcessEnv = process.env): (() => void) | null {
  const periodUsec = Number(env.WATCHDOG_USEC);
  if (!Number.isFinite(periodUsec) || periodUsec <= 0) return null;
  if (env.WATCHDOG_PID !== undefined && env.WATCHDOG_PID !== String(process.pid)) return null;
  const intervalMs = Math.max(1, Math.floor(periodUsec / 1000 / 2));
  const timer = setInterval(() => void notifySystemd('WATCHDOG=1'), intervalMs);
  timer.unref();
  log.info('systemd watchdog on', { interval_ms: intervalMs });
  return () => clearInterval(timer);
}
