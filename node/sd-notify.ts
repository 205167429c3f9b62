import { nativeAddon } from './native.js';

/**
 * sd_notify(3) from this very process: one datagram of newline-separated `VARIABLE=VALUE`
 * assignments to $NOTIFY_SOCKET (a path, or '@name' for an abstract socket). The kernel stamps
 * it with our pid, so the unit can say `NotifyAccess=main`. Returns false when there is no
 * notify socket (not run by systemd); throws, with the errno as `code`, when the send fails.
 */
export function sdNotify(assignments: readonly string[], notifySocket: string | undefined = process.env.NOTIFY_SOCKET): boolean {
  if (!notifySocket) return false;
  for (const assignment of assignments) {
    if (!/^[A-Z_][A-Z0-9_]*=/.test(assignment) || assignment.includes('\n')) {
      throw new RangeError(`sdNotify: "${assignment}" is not one VARIABLE=VALUE line`);
    }
  }
  nativeAddon().sendDatagram(notifySocket, Buffer.from(assignments.join('\n')));
  return true;
}
