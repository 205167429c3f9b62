import { dirname } from 'node:path';
import { ChainBreak, parseDataFile, reportFrom, verifyDataFile, type VerifyReport } from '../protocol/chain-verify.js';
import { readJournalRecords } from './journal-files.js';
import { fileIdentity, NotARegularFile, readRegularFileSync } from './durable-files.js';
import type { ChainRecord } from '../protocol/records.js';
import { sha256Hex } from './sha256.js';

/** A live daemon replaces the file and deletes covered journal segments while we read: try again. */
const SNAPSHOT_ATTEMPTS = 10;

/**
 * Verifies a data file as it lies on disk, with the journal segments beside it, no daemon needed.
 * A torn final journal line is a write that was never acknowledged and is not counted as damage.
 */
export function verifyDataFileOnDisk(dataFile: string): VerifyReport {
  return reportFrom(() => {
    const { text, records } = readSnapshot(dataFile);
    return verifyDataFile(parseDataFile(text), sha256Hex, records);
  });
}

/**
 * The data file and the journal records beside it, read as one consistent whole: the file must be
 * the same (inode, size, mtime) after the journal was read, and no segment may vanish meanwhile.
 */
function readSnapshot(dataFile: string): { text: string; records: ChainRecord[] } {
  for (let attempt = 1; ; attempt++) {
    const identity = fileIdentity(dataFile);
    let text: string;
    try {
      text = readRegularFileSync(dataFile).toString('utf8');
    } catch (error) {
      if (error instanceof NotARegularFile) throw new ChainBreak('unreadable file', null, error.message);
      throw new ChainBreak('unreadable file', null, `cannot read ${dataFile}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
    }
    let records: ChainRecord[];
    try {
      records = readJournalRecords(dirname(dataFile));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT' && attempt < SNAPSHOT_ATTEMPTS) continue;
      if (error instanceof NotARegularFile) throw new ChainBreak('unreadable file', null, error.message);
      throw error;
    }
    if (fileIdentity(dataFile) === identity || attempt >= SNAPSHOT_ATTEMPTS) return { text, records };
  }
}
