import type { Sha256Hex } from './canonical.js';
import { DATA_FILE_FORMAT, DATA_FILE_FORMAT_V1, isRecordLike, type DataFileV1, type DataFileV2 } from './data-file.js';
import { verifyParsedDataFileV2 } from './data-file-v2-verify.js';
import { GENESIS_HASH, LARGE_FIELDS, recordHash, type ChainPoint, type ChainRecord, type RecordStub } from './records.js';
import { tasksFromRecords, type TaskView } from './task-view.js';

export const VERIFY_REASONS = [
  'changed content',
  'missing record',
  'reordered records',
  'bad anchor',
  'unreadable file',
] as const;
export type VerifyReason = (typeof VERIFY_REASONS)[number];

/** The result of `verify`, from the daemon method and the CLI alike. */
export interface VerifyReport {
  ok: boolean;
  /** Records whose hash was recomputed. */
  checked: number;
  first_bad_seq: number | null;
  reason: VerifyReason | null;
  /** Human detail: what exactly did not match. */
  detail?: string;
  head: ChainPoint | null;
}

export class ChainBreak extends Error {
  constructor(
    readonly reason: VerifyReason,
    readonly seq: number | null,
    detail: string,
  ) {
    super(detail);
  }
}

const HEX64 = /^[0-9a-f]{64}$/;

/** Whether a record's own content matches its hash and its stored large fields match their digests. */
export function contentProblem(record: ChainRecord, sha256Hex: Sha256Hex): string | null {
  if (recordHash(record, sha256Hex) !== record.hash) return 'hash does not match the record content';
  if (record.type !== 'step_logged') {
    // The hash leaves these fields out; only step records may carry them.
    const stray = [...LARGE_FIELDS, 'elided'].find((field) => field in record);
    return stray ? `a ${record.type} record carries "${stray}"` : null;
  }
  for (const field of LARGE_FIELDS) {
    if (record.elided?.[field]) continue;
    const text = record[field];
    const digest = record[`${field}_sha256`];
    if (text === undefined && digest === undefined) continue;
    if (typeof text !== 'string' || digest !== sha256Hex(text)) return `${field} does not match ${field}_sha256`;
  }
  return null;
}

/**
 * Walks records and stubs forward from a known point, checking seq continuity, prev_hash links and
 * content. Used for the file, for journal replay and by the cloud on every pushed batch.
 */
export class ChainWalker {
  checked = 0;
  constructor(
    public head: ChainPoint,
    private readonly sha256Hex: Sha256Hex,
  ) {}

  /** Checks one record against the current head and advances; throws ChainBreak. */
  accept(record: ChainRecord): void {
    const expected = this.head.seq + 1;
    const problem = contentProblem(record, this.sha256Hex);
    if (problem) throw new ChainBreak('changed content', expected, `seq ${expected}: ${problem}`);
    if (record.seq !== expected) {
      throw new ChainBreak(
        record.seq > expected ? 'missing record' : 'reordered records',
        expected,
        `expected seq ${expected}, found seq ${record.seq}`,
      );
    }
    if (record.prev_hash !== this.head.hash) {
      throw new ChainBreak(
        this.head.seq === 0 ? 'bad anchor' : 'changed content',
        this.head.seq === 0 ? expected : this.head.seq,
        `seq ${expected}: prev_hash does not match the hash of seq ${this.head.seq}`,
      );
    }
    this.checked++;
    this.head = { seq: record.seq, hash: record.hash };
  }

  acceptStub([seq, hash]: RecordStub): void {
    const expected = this.head.seq + 1;
    if (seq !== expected || !HEX64.test(hash)) {
      throw new ChainBreak(seq > expected ? 'missing record' : 'reordered records', expected, `stub for seq ${seq} where ${expected} was expected`);
    }
    this.head = { seq, hash };
  }
}

/** Parses the data file's JSON text, either format; throws ChainBreak('unreadable file'). */
export function parseDataFile(text: string): DataFileV1 | DataFileV2 {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (error) {
    throw new ChainBreak('unreadable file', null, text.length === 0 ? 'the file is empty' : `not valid JSON (${(error as Error).message})`);
  }
  const problem = dataFileShapeProblem(doc);
  if (problem) throw new ChainBreak('unreadable file', null, problem);
  return doc as DataFileV1 | DataFileV2;
}

function dataFileShapeProblem(doc: unknown): string | null {
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) return 'the top level is not an object';
  const format = (doc as { format?: unknown }).format;
  if (format === DATA_FILE_FORMAT) return headerShapeProblem(doc as Partial<DataFileV2>) ?? entriesShapeProblem(doc as DataFileV2);
  if (format !== DATA_FILE_FORMAT_V1) return `"format" is neither "${DATA_FILE_FORMAT}" nor "${DATA_FILE_FORMAT_V1}"`;
  const d = doc as Partial<DataFileV1>;
  const problem = headerShapeProblem(d);
  if (problem) return problem;
  const chain = d.chain!;
  if (!Array.isArray(chain.stubs) || !chain.stubs.every(isStub)) return '"chain.stubs" is not a list of [seq, hash]';
  if (!Array.isArray(chain.records)) return '"chain.records" is not an array';
  const bad = chain.records.findIndex((r) => !isRecordLike(r));
  if (bad !== -1) return `"chain.records[${bad}]" is not a record`;
  return null;
}

function entriesShapeProblem(doc: DataFileV2): string | null {
  const entries = doc.chain.entries;
  if (!Array.isArray(entries)) return '"chain.entries" is not an array';
  const bad = entries.findIndex((e) => !isStub(e) && !isRecordLike(e));
  return bad === -1 ? null : `"chain.entries[${bad}]" is neither [seq, hash] nor a record`;
}

/** The members both formats share. */
function headerShapeProblem(d: Partial<DataFileV1 | DataFileV2>): string | null {
  if (!Array.isArray(d.tasks)) return '"tasks" is not an array';
  if (!Number.isSafeInteger(d.max_tasks) || (d.max_tasks as number) < 1) return '"max_tasks" is not a positive integer';
  if (typeof d.machine_id !== 'string') return '"machine_id" is not a string';
  if (!isPoint(d.head)) return '"head" is not {seq, hash}';
  const chain = d.chain;
  if (!chain || typeof chain !== 'object') return '"chain" is missing';
  if (!isPoint(chain.anchor)) return '"chain.anchor" is not {seq, hash}';
  return null;
}

function isPoint(p: unknown): p is ChainPoint {
  return !!p && typeof p === 'object' && Number.isSafeInteger((p as ChainPoint).seq) && typeof (p as ChainPoint).hash === 'string';
}
function isStub(s: unknown): s is RecordStub {
  return Array.isArray(s) && s.length === 2 && Number.isSafeInteger(s[0]) && typeof s[1] === 'string';
}

/**
 * Verifies a parsed data file of either format and the journal records that follow it. v1: the
 * chain from the anchor through stubs and kept records, the head, then the journal, then that
 * `tasks` is exactly the view the kept records produce. v2: the rules of docs/format-v2.md through
 * the one core (protocol/data-file-v2-verify.ts), then the journal. Returns the newest verified point.
 */
export function verifyDataFile(doc: DataFileV1 | DataFileV2, sha256Hex: Sha256Hex, journal: ChainRecord[] = []): { head: ChainPoint; checked: number } {
  if (doc.format === DATA_FILE_FORMAT) {
    const { walker, checked } = verifyParsedDataFileV2(doc, sha256Hex);
    walkJournal(walker, journal);
    return { head: walker.head, checked: checked + walker.checked };
  }
  const { anchor, stubs, records } = doc.chain;
  if (!HEX64.test(anchor.hash) || anchor.seq < 0 || (anchor.seq === 0 && anchor.hash !== GENESIS_HASH)) {
    throw new ChainBreak('bad anchor', anchor.seq + 1, 'the anchor is not a valid chain point');
  }
  const afterAnchor = records.find((record) => record.seq === anchor.seq + 1);
  if (anchor.seq > 0 && afterAnchor && afterAnchor.prev_hash !== anchor.hash && contentProblem(afterAnchor, sha256Hex) === null) {
    throw new ChainBreak('bad anchor', anchor.seq + 1, `seq ${anchor.seq + 1} does not follow the anchor (seq ${anchor.seq})`);
  }
  const walker = new ChainWalker({ ...anchor }, sha256Hex);
  walkInterleaved(walker, stubs, records, sha256Hex);
  if (walker.head.seq < doc.head.seq) {
    throw new ChainBreak('missing record', walker.head.seq + 1, `"head" says seq ${doc.head.seq}, the chain ends at seq ${walker.head.seq}`);
  }
  if (walker.head.seq !== doc.head.seq || walker.head.hash !== doc.head.hash) {
    throw new ChainBreak('changed content', Math.min(walker.head.seq, doc.head.seq) || null, `"head" says seq ${doc.head.seq}, the chain ends at seq ${walker.head.seq}`);
  }
  walkJournal(walker, journal);
  verifyTaskView(doc);
  return { head: walker.head, checked: walker.checked };
}

/** The journal records after the checkpoint's head; older ones the checkpoint already holds. */
function walkJournal(walker: ChainWalker, journal: Iterable<ChainRecord>): void {
  for (const record of journal) acceptJournalRecord(walker, record);
}

export function acceptJournalRecord(walker: ChainWalker, record: ChainRecord): void {
  if (record.seq > walker.head.seq) walker.accept(record);
}

/** Stubs and records each in their stored order, merged by the seq the chain expects next. */
function walkInterleaved(walker: ChainWalker, stubs: RecordStub[], records: ChainRecord[], sha256Hex: Sha256Hex): void {
  let s = 0;
  let r = 0;
  while (s < stubs.length || r < records.length) {
    const expected = walker.head.seq + 1;
    if (s < stubs.length && stubs[s][0] === expected) {
      walker.acceptStub(stubs[s++]);
      continue;
    }
    if (r < records.length) {
      const record = records[r];
      if (record.seq !== expected && contentProblem(record, sha256Hex) === null) {
        const later = records.slice(r + 1).some((x) => x.seq === expected) || stubs.slice(s + 1).some((x) => x[0] === expected);
        throw new ChainBreak(later ? 'reordered records' : 'missing record', expected, later ? `seq ${expected} is stored after seq ${record.seq}` : `seq ${expected} is missing`);
      }
      walker.accept(record);
      r++;
      continue;
    }
    walker.acceptStub(stubs[s++]);
  }
}

/** Throws when `tasks`/`count` differ from what the kept records say, naming the first differing record. */
export function verifyTaskView(doc: DataFileV1): void {
  const expected = [...tasksFromRecords(doc.chain.records).values()];
  const stored = doc.tasks as TaskView[];
  for (let i = 0; i < Math.max(expected.length, stored.length); i++) {
    const want = expected[i];
    const have = stored[i];
    if (!want) throw new ChainBreak('changed content', seqOf(have), `"tasks[${i}]" has no records behind it`);
    if (!have) throw new ChainBreak('missing record', want.seq, `task ${want.task_id} (seq ${want.seq}) is missing from "tasks"`);
    if (deepEqual(want, have)) continue;
    const { steps: wantSteps, ...wantTop } = want;
    const { steps: haveSteps, ...haveTop } = have;
    if (!deepEqual(wantTop, haveTop) || !Array.isArray(haveSteps)) {
      const completionDiffers =
        want.completed_at !== undefined &&
        (want.status !== have.status || want.completed_at !== have.completed_at || want.completed_seq !== have.completed_seq);
      const seq = completionDiffers ? completedSeq(doc, want.task_id) : want.seq;
      throw new ChainBreak('changed content', seq, `"tasks[${i}]" (${want.task_id}) differs from its records`);
    }
    for (let j = 0; j < Math.max(wantSteps.length, haveSteps.length); j++) {
      if (!deepEqual(wantSteps[j], haveSteps[j])) {
        const seq = wantSteps[j]?.seq ?? seqOf(haveSteps[j]);
        throw new ChainBreak('changed content', seq, `"tasks[${i}].steps[${j}]" (${want.task_id}) differs from its record`);
      }
    }
  }
  if (doc.count !== stored.length) throw new ChainBreak('changed content', null, `"count" is ${String(doc.count)} but "tasks" holds ${stored.length}`);
}

function completedSeq(doc: DataFileV1, taskId: string): number | null {
  return doc.chain.records.find((r) => r.type === 'task_completed' && r.task_id === taskId)?.seq ?? null;
}

function seqOf(value: unknown): number | null {
  const seq = (value as { seq?: unknown } | undefined)?.seq;
  return Number.isSafeInteger(seq) ? (seq as number) : null;
}

/** Structural equality of JSON values; object key order does not matter. */
export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const bb = b as unknown[];
    return a.length === bb.length && a.every((x, i) => deepEqual(x, bb[i]));
  }
  const ka = Object.keys(a).filter((k) => (a as Record<string, unknown>)[k] !== undefined);
  const kb = Object.keys(b).filter((k) => (b as Record<string, unknown>)[k] !== undefined);
  return ka.length === kb.length && ka.every((k) => deepEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

/** Runs a verification step and turns its outcome into a report. */
export function reportFrom(run: () => { head: ChainPoint; checked: number }): VerifyReport {
  try {
    const { head, checked } = run();
    return { ok: true, checked, first_bad_seq: null, reason: null, head };
  } catch (error) {
    if (!(error instanceof ChainBreak)) throw error;
    return { ok: false, checked: 0, first_bad_seq: error.seq, reason: error.reason, detail: error.message, head: null };
  }
}
