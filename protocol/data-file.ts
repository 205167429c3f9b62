import type { ChainPoint, ChainRecord, RecordStub } from './records.js';
import type { TaskHistoryDict } from './task-view.js';

/**
 * `task_history.json`: the original's `to_dict` shape at the top (`tasks`, `count`, `max_tasks`,
 * readable by the original `TaskHistory.from_dict`), plus the chain that proves it.
 * `chain.anchor` is the last record before everything the file holds (seq 0 and GENESIS_HASH while
 * nothing was trimmed); `head` is the newest record in the file. The file is a checkpoint: records
 * committed after it are in the journal segments beside it.
 *
 * `taskhistory/2` (written today; layout in docs/format-v2.md and protocol/data-file-v2.ts): the
 * chain holds one entry per seq, `[seq, hash]` for a step whose content is its view in `tasks` or
 * for a trimmed record, else the record without its large fields; each output is stored once.
 * `taskhistory/1` (still read): `chain.records` are the kept records in full, in seq order, and
 * `chain.stubs` the `[seq, hash]` of trimmed records newer than the oldest kept one.
 */
export const DATA_FILE_FORMAT = 'taskhistory/2';
export const DATA_FILE_FORMAT_V1 = 'taskhistory/1';
export const DATA_FILE_NAME = 'task_history.json';

interface DataFileHeader extends TaskHistoryDict {
  machine_id: string;
  head: ChainPoint;
}

export interface DataFileV1 extends DataFileHeader {
  format: typeof DATA_FILE_FORMAT_V1;
  chain: {
    anchor: ChainPoint;
    stubs: RecordStub[];
    records: ChainRecord[];
  };
}

/** A v2 chain entry: a stub (kept step rebuilt from its view, or trimmed record) or a record without large fields. */
export type ChainEntry = RecordStub | ChainRecord;

export interface DataFileV2 extends DataFileHeader {
  format: typeof DATA_FILE_FORMAT;
  chain: {
    anchor: ChainPoint;
    entries: ChainEntry[];
  };
}

/** The in-memory document the v1 engine builds and reads (it goes with that engine). */
export type DataFile = DataFileV1;

/**
 * Journal segments: `task_history.journal.<first seq, 12 digits>.jsonl` beside the data file, one
 * record per line (`JSON.stringify` of the record, then `\n`), appended and fsync'ed before a
 * record is acknowledged. A segment is deleted once a checkpoint of the data file covers it.
 * The writer preallocates space by writing zero bytes past its lines (an fdatasync that does not
 * change the file's size is cheaper): a segment's lines end at its first NUL byte, which no line
 * contains (JSON escapes it). Anything but zeros after that is a torn, never-acknowledged write.
 */
const SEGMENT_PATTERN = /^task_history\.journal\.(\d{12})\.jsonl$/;

export function journalSegmentName(firstSeq: number): string {
  return `task_history.journal.${String(firstSeq).padStart(12, '0')}.jsonl`;
}

export function isJournalSegmentName(name: string): boolean {
  return SEGMENT_PATTERN.test(name);
}

/** Segment names from a directory listing, oldest first. */
export function sortedJournalSegments(names: string[]): string[] {
  return names.filter(isJournalSegmentName).sort();
}

/** Where a foreign edit of the data file is kept as evidence: beside it, named for the moment it was found. */
export function evidenceFileName(dataFile: string, at: Date): string {
  return `${dataFile}.tampered-${at.toISOString().replace(/[:.]/g, '-')}`;
}

export function journalLine(record: ChainRecord): string {
  return `${JSON.stringify(record)}\n`;
}

const RECORD_TYPES = new Set(['task_created', 'step_logged', 'task_completed', 'tamper_detected']);

/** Enough shape to walk the chain safely; the hash proves the rest. */
export function isRecordLike(value: unknown): value is ChainRecord {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const r = value as Record<string, unknown>;
  return (
    Number.isSafeInteger(r.seq) &&
    typeof r.hash === 'string' &&
    typeof r.prev_hash === 'string' &&
    typeof r.ts === 'number' &&
    typeof r.type === 'string' &&
    RECORD_TYPES.has(r.type) &&
    (r.type === 'tamper_detected' || typeof r.task_id === 'string')
  );
}
