import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export class DataDirInUse extends Error {}

const LOCK_FILE = 'taskhistoryd.lock';

/**
 * One daemon per data dir: a lock file holding the owner's pid, created exclusively. A lock
 * whose pid is gone (kill -9) or is no longer a taskhistoryd is stale and taken over.
 * Returns the release function.
 */
export function lockDataDir(dataDir: string): () => void {
  const path = join(dataDir, LOCK_FILE);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return () => {
        try {
          if (readFileSync(path, 'utf8').trim() === String(process.pid)) unlinkSync(path);
        } catch {
          // already gone
        }
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const owner = Number(readFileSync(path, 'utf8').trim());
    if (isLiveDaemon(owner)) {
      throw new DataDirInUse(`the data dir ${dataDir} is in use by taskhistoryd pid ${owner}; stop it first or pass another --data-dir`);
    }
    unlinkSync(path);
  }
  throw new DataDirInUse(`could not lock the data dir ${dataDir} (${path} keeps reappearing)`);
}

function isLiveDaemon(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid) return false;
  try {
    // A reused pid belongs to some other program: its command line names no daemon of ours.
    return /taskhistoryd|daemon\/main\.js/.test(readFileSync(`/proc/${pid}/cmdline`, 'utf8'));
  } catch {
    return false;
  }
}
