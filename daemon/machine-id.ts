import { createHmac, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readRegularFileSync } from '../node/durable-files.js';

/** Fixed application key, as systemd's sd_id128_get_machine_app_specific uses one per application. */
const APPLICATION_KEY = 'taskhistory:machine-id:v1';

/**
 * The id stamped on every task: `--machine-id`; else an app-specific id derived from
 * /etc/machine-id (an HMAC keyed by it, so the raw id, which is meant to stay private, never
 * leaves the machine); else a random id generated once and kept in the data dir.
 */
export function resolveMachineId(explicit: string | undefined, dataDir: string, machineIdFile = '/etc/machine-id'): string {
  if (explicit) return explicit;
  try {
    const raw = readFileSync(machineIdFile, 'utf8').trim();
    if (/^[0-9a-f]{32}$/.test(raw)) return createHmac('sha256', raw).update(APPLICATION_KEY).digest('hex').slice(0, 32);
  } catch {
    // no /etc/machine-id (containers): fall through
  }
  const kept = join(dataDir, 'machine_id');
  try {
    const id = readRegularFileSync(kept).toString('utf8').trim();
    if (id) return id;
  } catch {
    // first start
  }
  const id = randomBytes(16).toString('hex');
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  writeFileSync(kept, `${id}\n`, { mode: 0o600, flag: 'wx' }); // exclusive: never through a planted link
  return id;
}
