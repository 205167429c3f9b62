import { closeSync, constants, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { acceptJournalRecord, ChainBreak, parseDataFile, reportFrom, verifyDataFile, type ChainWalker, type VerifyReport } from '../protocol/chain-verify.js';
import { DataFileV2Verifier } from '../protocol/data-file-v2-verify.js';
import { DOCUMENT_END_LINE, parseHeader, parseTaskHead, peekEntrySeqHash, peekStepSeq, TASK_END_LINE, TASKS_SECTION_LINE } from '../protocol/data-file-v2.js';
import type { ChainPoint, ChainRecord } from '../protocol/records.js';
import { fileIdentity, NotARegularFile, openRegularFileSync } from './durable-files.js';
import { forEachLine } from './file-lines.js';
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
 * The data file and the journal are read as one consistent whole: the file must be the same
 * (inode, size, mtime) after the journal was read, and no segment may vanish meanwhile.
 */
export function verifyDataFileOnDisk(dataFile: string): VerifyReport {
  return reportFrom(() => {
    for (let attempt = 1; ; attempt++) {
      const last = attempt >= SNAPSHOT_ATTEMPTS;
      const identity = fileIdentity(dataFile);
      const fd = openDataFile(dataFile);
      let streamed: { walker: ChainWalker; checked: number } | null;
      let text: string | null = null;
      try {
        streamed = streamDataFileV2(fd);
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

/** Thrown inside the line loop when the file is not in the canonical v2 layout: it is then parsed whole. */
class OtherLayout extends Error {}

const line = (text: string) => text.slice(0, -1);
const TASKS_SECTION = line(TASKS_SECTION_LINE);
const TASK_END = line(TASK_END_LINE);
const DOCUMENT_END = line(DOCUMENT_END_LINE);

/**
 * Feeds a v2 file in the daemon's layout (docs/format-v2.md) line by line to the verifier core.
 * Returns null when the file is in any other layout (or is v1); ChainBreak for what the core finds.
 */
function streamDataFileV2(fd: number): { walker: ChainWalker; checked: number } | null {
  const verifier = new DataFileV2Verifier(sha256Hex);
  let state = 'header' as 'header' | 'entries' | 'tasks' | 'steps' | 'done';
  let count = 0;
  // Whether the next item is the first of its list (entries, tasks, a task's steps): it has no comma.
  let first = true;
  const commaOk = (text: string) => text.startsWith(',') !== first;
  try {
    const { partial } = forEachLine(fd, 0, (bytes, start, end) => {
      const text = bytes.toString('utf8', start, end);
      switch (state) {
        case 'header': {
          const header = parseHeader(text);
          if (!header) throw new OtherLayout();
          count = header.count;
          verifier.acceptHeader(header);
          state = 'entries';
          first = true;
          break;
        }
        case 'entries': {
          if (text === TASKS_SECTION) {
            verifier.endEntries();
            state = 'tasks';
            first = true;
            break;
          }
          const peek = peekEntrySeqHash(text);
          if (!peek || !commaOk(text)) throw new OtherLayout();
          verifier.acceptEntry(peek.record ?? [peek.seq, peek.hash]);
          first = false;
          break;
        }
        case 'tasks': {
          if (text === DOCUMENT_END) {
            state = 'done';
            break;
          }
          const head = parseTaskHead(text);
          if (!head || !commaOk(text)) throw new OtherLayout();
          verifier.acceptTaskHead(head);
          state = 'steps';
          first = true;
          break;
        }
        case 'steps': {
          if (text === TASK_END) {
            state = 'tasks';
            first = false;
            break;
          }
          const view = peekStepSeq(text) === null || !commaOk(text) ? null : parseJsonLine(text);
          if (view === null) throw new OtherLayout();
          verifier.acceptStepView(view);
          first = false;
          break;
        }
        case 'done':
          throw new OtherLayout();
      }
    });
    if (partial || state !== 'done') return null;
  } catch (error) {
    if (error instanceof OtherLayout) return null;
    throw error;
  }
  return { walker: verifier.end(count), checked: verifier.checked };
}

function parseJsonLine(text: string): unknown {
  try {
    return JSON.parse(text.startsWith(',') ? text.slice(1) : text);
  } catch {
    return null;
  }
}
