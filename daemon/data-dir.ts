import { readdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { DATA_FILE_NAME, sortedJournalSegments } from '../protocol/data-file.js';
import { isDurableWriteTemp } from '../node/durable-files.js';
import { log } from '../node/log.js';

/** `<data dir>/durable_head.json`: the newest head known durable, to notice files that lost records. */
export const DURABLE_HEAD_FILE = 'durable_head.json';

/** Temp files of a journal restore from the cloud (see cloud-restore.ts). */
const RESTORE_TEMP_PATTERN = /\.\d+\.restore\.tmp$/;

function namesIn(dataDir: string): string[] {
  try {
    return readdirSync(dataDir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
}

/** What history the data dir holds (the data file, or journal segments), or null when it holds none. */
export function existingHistory(dataDir: string): string | null {
  const names = namesIn(dataDir);
  if (names.includes(DATA_FILE_NAME)) return DATA_FILE_NAME;
  const segments = sortedJournalSegments(names);
  return segments.length > 0 ? `journal segments (${segments[0]}...)` : null;
}

/**
 * Removes temp files that a killed daemon left behind (a checkpoint, cursor or head file never
 * renamed into place, a restore never finished). Only under the data dir lock: no writer is live.
 */
export function removeStrayTempFiles(dataDir: string): void {
  for (const name of namesIn(dataDir)) {
    if (!isDurableWriteTemp(name) && !RESTORE_TEMP_PATTERN.test(name)) continue;
    unlinkSync(join(dataDir, name));
    log.info('removed a temp file left by a daemon that was killed mid-write', { file: join(dataDir, name) });
  }
}
