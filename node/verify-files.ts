import { closeSync, constants, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { acceptJournalRecord, ChainBreak, parseDataFile, reportFrom, verifyDataFile, type ChainWalker, type VerifyReport } from '../protocol/chain-verify.js';
import { DataFileV2Verifier, type SeqHashes } from '../protocol/data-file-v2-verify.js';
import type { ChainPoint, ChainRecord } from '../protocol/records.js';
import { fileIdentity, NotARegularFile, openRegularFileSync } from './durable-files.js';
import { OtherLayout, walkDataFileV2 } from './data-file-lines.js';
import { readJournalRecords, scanJournalSegments } from './journal-files.js';
import { sha256Hex } from './sha256.js';

/** A live daemon replaces the file and deletes covered journal segments while we read: try again. */
const SNAPSHOT_ATTEMPTS = 10;

/**
 * Verifies a data file as it lies on disk, with the journal segments beside it, no daemon needed.
 * A `taskhistory/2` file in the layout the daemon writes is streamed line by line through the
 * verifier core, and the journal after it, in bounded memory whatever their size; a v1 file or a
 * v2 document in another layout is parsed whole. A torn final journal line is a write that was
 * never acknowledged and is not counted as damage.
 *
 * `hashesFrom` is where the v2 verifier keeps the entries' hashes (its own arrays unless given).
 *
 * The data file and the journal are read as one consistent whole: the file must be the same
 * (inode, size, mtime) after the journal was read, and no segment may vanish meanwhile.
 */
export function verifyDataFileOnDisk(dataFile: string, hashesFrom?: (firstSeq: number) => SeqHashes): VerifyReport {
  return reportFrom(() => {
    for (let attempt = 1; ; attempt++) {
      const last = attempt >= SNAPSHOT_ATTEMPTS;
      const identity = fileIdentity(dataFile);
      const fd = openDataFile(dataFile);
      let streamed: { walker: ChainWalker; checked: number } | null;
      let text: string | null = null;
      try {
        streamed = streamDataFileV2(fd, hashesFrom);
        if (!streamed) text = readFileSync(fd, 'utf8');
      } finally {
        closeSync(fd);
      }
      let result: { head: ChainPoint; checked: number };
      try {
        result = streamed ? continueWithJournal(dataFile, streamed) : verifyDataFile(parseDataFile(text!), sha256Hex, readJournalRecords(dirname(dataFile)));
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT' && !last) continue;
        if (error instanceof NotARegularFile) throw new ChainBreak('unreadable file', null, error.message);
        throw error;
      }
      if (fileIdentity(dataFile) === identity || last) return result;
    }
  });
}

function openDataFile(dataFile: string): number {
  try {
    return openRegularFileSync(dataFile, constants.O_RDONLY);
  } catch (error) {
    if (error instanceof NotARegularFile) throw new ChainBreak('unreadable file', null, error.message);
    throw new ChainBreak('unreadable file', null, `cannot read ${dataFile}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  }
}

function continueWithJournal(dataFile: string, { walker, checked }: { walker: ChainWalker; checked: number }): { head: ChainPoint; checked: number } {
  scanJournalSegments(dirname(dataFile), (record: ChainRecord) => acceptJournalRecord(walker, record));
  return { head: walker.head, checked: checked + walker.checked };
}

/**
 * Feeds a v2 file in the daemon's layout line by line to the verifier core. Returns null when the
 * file is in any other layout (or is v1); ChainBreak for what the core finds.
 */
function streamDataFileV2(fd: number, hashesFrom?: (firstSeq: number) => SeqHashes): { walker: ChainWalker; checked: number } | null {
  const verifier = new DataFileV2Verifier(sha256Hex, hashesFrom);
  let header;
  try {
    header = walkDataFileV2(fd, {
      header: (found) => verifier.acceptHeader(found),
      stub: (seq, hash) => verifier.acceptEntry([seq, hash]),
      record: (record) => verifier.acceptEntry(record),
      endEntries: () => verifier.endEntries(),
      taskHead: (head) => verifier.acceptTaskHead(head),
      step: (_seq, line) => {
        const view = parseJsonLine(line.text());
        if (view === null) throw new OtherLayout('a step view is not JSON');
        verifier.acceptStepView(view);
      },
    });
  } catch (error) {
    if (error instanceof OtherLayout) return null;
    throw error;
  }
  return { walker: verifier.end(header.count), checked: verifier.checked };
}

function parseJsonLine(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}
