import { log } from '../node/log.js';
import { sdNotify } from '../node/sd-notify.js';

/**
 * The daemon's side of systemd's service protocols: socket activation (sd_listen_fds), readiness
 * and status (sd_notify) and the watchdog. Without systemd (no LISTEN_FDS, no NOTIFY_SOCKET)
 * every function here is a no-op.
 *
 * Notifications are datagrams sent by this process itself (node/sd-notify.ts, over the package's
 * native addon), so the units can say `NotifyAccess=main`: nothing else in the service's cgroup
 * can claim READY=1 or STOPPING=1 for it.
 */

/** The first passed descriptor (SD_LISTEN_FDS_START). */
const FIRST_LISTEN_FD = 3;

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

let notifyFailureReported = false;

/**
 * Sends `VARIABLE=VALUE` assignments (READY=1, STOPPING=1, STATUS=...) to the service manager.
 * The send is one non-blocking datagram, done when this returns; the promise never rejects.
 * No-op without NOTIFY_SOCKET. A failure is logged once, since the watchdog would repeat it.
 */
export function notifySystemd(...assignments: string[]): Promise<void> {
  if (assignments.length === 0) return Promise.resolve();
  try {
    sdNotify(assignments);
  } catch (error) {
    if (!notifyFailureReported) {
      notifyFailureReported = true;
      log.warn(`cannot notify systemd at ${process.env.NOTIFY_SOCKET}, so it gets no readiness or watchdog notifications`, {
        sent: assignments.join(' '),
        error: (error as Error).message,
      });
    }
  }
  return Promise.resolve();
}

/**
 * When the unit sets WatchdogSec (WATCHDOG_USEC, for this process per WATCHDOG_PID), sends
 * WATCHDOG=1 every quarter period from the event loop, so a stuck loop gets the service restarted
 * while a ping that is slow to deliver (systemd-notify is a child process) or a loop held for up
 * to half the period does not. A tick that comes late by more than a quarter period is logged:
 * the loop stalled that long, and half as long again would have tripped the watchdog.
 * Returns the function that stops the pings, or null when no watchdog is configured.
 */
export function startWatchdog(env: NodeJS.ProcessEnv = process.env): (() => void) | null {
  const periodUsec = Number(env.WATCHDOG_USEC);
  if (!Number.isFinite(periodUsec) || periodUsec <= 0) return null;
  if (env.WATCHDOG_PID !== undefined && env.WATCHDOG_PID !== String(process.pid)) return null;
  const intervalMs = Math.max(1, Math.floor(periodUsec / 1000 / 4));
  let due = Date.now() + intervalMs;
  let pinging = false;
  const timer = setInterval(() => {
    const lateMs = Date.now() - due;
    if (lateMs > intervalMs) log.warn('the event loop stalled; the systemd watchdog fires at a stall of its whole period', { stalled_ms: lateMs, watchdog_ms: Math.round(periodUsec / 1000) });
    due = Date.now() + intervalMs;
    // One ping at a time: on a loaded machine notify processes must not pile up.
    if (pinging) return;
    pinging = true;
    void notifySystemd('WATCHDOG=1').finally(() => (pinging = false));
  }, intervalMs);
  timer.unref();
  log.info('systemd watchdog on', { interval_ms: intervalMs });
  return () => clearInterval(timer);
}
