import { canonicalize, type Sha256Hex } from './canonical.js';
import { ChainBreak, ChainWalker, contentProblem, deepEqual } from './chain-verify.js';
import type { ChainEntry, DataFileV2 } from './data-file.js';
import { expandStepView, rebuildStepRecord, stepViewOf, type DataFileV2Header, type TaskHead } from './data-file-v2.js';
import { GENESIS_HASH, LARGE_FIELDS, recordHash, type ChainPoint, type ChainRecord, type StepLoggedRecord, type Writer } from './records.js';
import { applyRecordToTasks, type StepView, type TaskView } from './task-view.js';

/**
 * Verification of a `taskhistory/2` document (docs/format-v2.md, "Verification"), fed item by item
 * in file order: header, chain entries, then per task its head and its step views, then end().
 * The same core serves a parsed document and a file streamed line by line.
 *
 * Memory: per seq of anchor+1..head one hash (32 bytes, unless the caller holds them: SeqHashes)
 * and one kind byte in typed arrays; per kept task its id, a digest of its head and its completion;
 * the few full `step_logged` entries (those with `elided`, no large fields) until their view
 * arrives. No record or view is kept otherwise.
 *
 * Every problem found is kept as a candidate and end() throws the one with the lowest seq (a seq
 * before none), so the report names the first bad seq whatever the order views come in.
 */

const HEX64 = /^[0-9a-f]{64}$/;
const STEP_VIEW_KEYS: ReadonlySet<string> = new Set(['step', 'command', 'status', 'timestamp', ...LARGE_FIELDS, 'started_at', 'duration_ms', 'exit_code', 'writer', 'seq']);

/** What a seq's chain entry was. */
const Kind = { Stub: 1, FullStep: 2, FullOther: 3 } as const;
type Kind = (typeof Kind)[keyof typeof Kind];
const CLAIMED = 8;

interface KeptTask {
  task_id: string;
  seq: number;
  /** sha256 of the canonical head the task_created record gives (status running, no completion). */
  headDigest: string;
  completion?: { status: string; ts: number; seq: number };
}

/** The task whose step views are being read. */
interface CurrentTask {
  task_id: string;
  lastSeq: number;
  writer: Writer | undefined;
}

/**
 * The hash each chain entry gives its seq, for the intact part of the chain. OwnSeqHashes keeps
 * them; a daemon verifying its own file passes the hashes its index already holds, so that only
 * the file's hashes that differ from those need keeping.
 */
export interface SeqHashes {
  put(seq: number, hash: string): void;
  get(seq: number): string;
}

/** The hashes of seqs from `firstSeq` on, as bytes in a typed array that doubles as it fills. */
export class OwnSeqHashes implements SeqHashes {
  private bytes = new Uint8Array(32 * 64);

  constructor(private readonly firstSeq: number) {}

  put(seq: number, hash: string): void {
    const at = (seq - this.firstSeq) * 32;
    while (at >= this.bytes.length) {
      const grown = new Uint8Array(this.bytes.length * 2);
      grown.set(this.bytes);
      this.bytes = grown;
    }
    writeHex(this.bytes, at, hash);
  }

  get(seq: number): string {
    return readHex(this.bytes, (seq - this.firstSeq) * 32);
  }
}

export class DataFileV2Verifier {
  checked = 0;
  private header: DataFileV2Header | null = null;
  private walker!: ChainWalker;
  private hashes!: SeqHashes;
  /** Kind of seq anchor+1+i at index i, for the intact part of the chain. */
  private kinds = new Uint8Array(64);
  private entries = 0;
  /** The seq the chain section's first gap or misplacement is at; entries from it on are not indexed. */
  private structuralBreakSeq: number | null = null;
  private breakSeqFoundLater = false;
  /** The seq that stood where structuralBreakSeq belonged. */
  private seqAtBreak = 0;
  private readonly fullSteps = new Map<number, StepLoggedRecord>();
  private readonly kept: KeptTask[] = [];
  private readonly keptIndex = new Map<string, number>();
  private tasksSeen = 0;
  private currentTask: CurrentTask | null = null;
  private candidate: ChainBreak | null = null;

  constructor(
    private readonly sha256Hex: Sha256Hex,
    /** Where the entries' hashes go, given the first seq after the anchor. */
    private readonly hashesFrom: (firstSeq: number) => SeqHashes = (firstSeq) => new OwnSeqHashes(firstSeq),
  ) {}

  acceptHeader(header: DataFileV2Header): void {
    const { anchor } = header;
    if (!HEX64.test(anchor.hash) || anchor.seq < 0 || (anchor.seq === 0 && anchor.hash !== GENESIS_HASH)) {
      throw new ChainBreak('bad anchor', anchor.seq + 1, 'the anchor is not a valid chain point');
    }
    this.header = header;
    this.walker = new ChainWalker({ ...anchor }, this.sha256Hex);
    this.hashes = this.hashesFrom(anchor.seq + 1);
  }

  acceptEntry(entry: ChainEntry): void {
    const expected = this.anchor.seq + 1 + this.entries;
    const seq = Array.isArray(entry) ? entry[0] : entry.seq;
    if (this.structuralBreakSeq !== null) {
      if (seq === this.structuralBreakSeq) this.breakSeqFoundLater = true;
      return;
    }
    if (seq !== expected) {
      // Like v1: a full record whose content is bad is changed content where it stands.
      if (!Array.isArray(entry) && recordHash(entry, this.sha256Hex) !== entry.hash) {
        this.note(new ChainBreak('changed content', expected, `seq ${expected}: hash does not match the record content`));
      }
      this.structuralBreakSeq = expected;
      this.seqAtBreak = seq;
      return;
    }
    if (Array.isArray(entry)) {
      if (!HEX64.test(entry[1])) this.note(new ChainBreak('changed content', seq, `the entry for seq ${seq} has no valid hash`));
      this.walker.head = { seq, hash: entry[1] };
      this.index(entry[1], Kind.Stub);
      return;
    }
    this.acceptFullEntry(entry);
  }

  private acceptFullEntry(record: ChainRecord): void {
    const seq = record.seq;
    const large = [...LARGE_FIELDS].find((field) => field in record);
    if (large) this.note(new ChainBreak('changed content', seq, `seq ${seq}: the chain entry carries "${large}" (it belongs in the step view)`));
    const prev = this.walker.head;
    // A step's large fields are in its view: here only its hash is checked, the rest at the view.
    const problem = record.type === 'step_logged' ? (recordHash(record, this.sha256Hex) === record.hash ? null : 'hash does not match the record content') : contentProblem(record, this.sha256Hex);
    if (problem) this.note(new ChainBreak('changed content', seq, `seq ${seq}: ${problem}`));
    else if (record.prev_hash !== prev.hash) {
      const atAnchor = prev.seq === this.anchor.seq;
      this.note(new ChainBreak(atAnchor ? 'bad anchor' : 'changed content', atAnchor ? seq : prev.seq, `seq ${seq}: prev_hash does not match the hash of seq ${prev.seq}`));
    } else if (record.type !== 'step_logged') this.checked++; // a step is counted once, at its view
    this.walker.head = { seq, hash: record.hash };
    this.index(record.hash, record.type === 'step_logged' ? Kind.FullStep : Kind.FullOther);
    if (record.type === 'step_logged') this.fullSteps.set(seq, record);
    else this.trackTask(record, problem === null);
  }

  /** Kept tasks in creation order and their completions: what the task heads must say. */
  private trackTask(record: ChainRecord, intact: boolean): void {
    if (record.type === 'task_created') {
      // A damaged record (already reported) gives no head to compare with.
      let headDigest = '';
      if (intact && Array.isArray(record.plan)) {
        const head = applyRecordToTasks(new Map(), record) as Partial<TaskView>;
        delete head.steps;
        headDigest = this.sha256Hex(canonicalize(head));
      }
      this.keptIndex.set(record.task_id, this.kept.length);
      this.kept.push({ task_id: record.task_id, seq: record.seq, headDigest });
    } else if (record.type === 'task_completed') {
      const index = this.keptIndex.get(record.task_id);
      if (index !== undefined) this.kept[index].completion = { status: record.final_status, ts: record.ts, seq: record.seq };
    }
  }

  /** After the last entry: the chain must end at `head`. */
  endEntries(): void {
    const head = this.header!.head;
    if (this.structuralBreakSeq !== null) {
      const at = this.structuralBreakSeq;
      this.note(
        this.breakSeqFoundLater
          ? new ChainBreak('reordered records', at, `seq ${at} is stored after seq ${this.seqAtBreak}`)
          : new ChainBreak('missing record', at, `seq ${at} is missing (seq ${this.seqAtBreak} stands in its place)`),
      );
      return;
    }
    const end = this.walker.head;
    if (end.seq < head.seq) this.note(new ChainBreak('missing record', end.seq + 1, `"head" says seq ${head.seq}, the chain ends at seq ${end.seq}`));
    else if (end.seq !== head.seq || end.hash !== head.hash) {
      this.note(new ChainBreak('changed content', Math.min(end.seq, head.seq) || null, `"head" says seq ${head.seq}, the chain ends at seq ${end.seq}`));
    }
  }

  /** A task's head (its view without steps); null for a task that is not an object with a steps list. */
  acceptTaskHead(value: unknown): void {
    const position = this.tasksSeen++;
    const want = this.kept[position];
    const have = value as Partial<TaskHead> | null;
    const haveSeq = have && typeof have === 'object' && Number.isSafeInteger(have.seq) ? (have.seq as number) : null;
    // The head's writer is checked with the head; a step view naming it as TASK_WRITER is rebuilt with it.
    this.currentTask = { task_id: typeof have?.task_id === 'string' ? have.task_id : '', lastSeq: 0, writer: have && typeof have === 'object' ? have.writer : undefined };
    if (!want) {
      // Behind a break in the chain the task's records were not read: the break is what is reported.
      if (this.structuralBreakSeq === null) this.note(new ChainBreak('changed content', haveSeq, `"tasks[${position}]" has no records behind it`));
      return;
    }
    const problem = have && typeof have === 'object' && !Array.isArray(have) ? this.headProblem(want, have) : 'head';
    if (problem) {
      const seq = problem === 'completion' && want.completion ? want.completion.seq : want.seq;
      this.note(new ChainBreak('changed content', seq, `"tasks[${position}]" (${want.task_id}) differs from its records`));
    }
    this.currentTask.task_id = want.task_id;
  }

  private headProblem(want: KeptTask, have: Partial<TaskHead>): 'completion' | 'head' | null {
    const { status, completed_at, completed_seq, ...rest } = have as Partial<TaskHead> & Record<string, unknown>;
    delete (rest as Record<string, unknown>).steps;
    const done = want.completion;
    const completionOk = done
      ? status === done.status && completed_at === done.ts && completed_seq === done.seq
      : (status === 'running' && completed_at === undefined && completed_seq === undefined) || this.structuralBreakSeq !== null; // its completion may lie behind the break
    if (this.sha256Hex(canonicalize({ ...rest, status: 'running' })) !== want.headDigest) return 'head';
    return completionOk ? null : 'completion';
  }

  acceptStepView(value: unknown): void {
    const view = value as StepView;
    const task = this.currentTask;
    const seq = view && typeof view === 'object' && Number.isSafeInteger(view.seq) ? view.seq : null;
    if (!task || seq === null) {
      this.note(new ChainBreak('changed content', seq, 'a step view without a valid seq or task'));
      return;
    }
    const problem = this.stepProblem(view, seq, task);
    if (problem) this.note(new ChainBreak('changed content', seq, `the step view of seq ${seq} (${task.task_id}): ${problem}`));
    else this.checked++;
    task.lastSeq = Math.max(task.lastSeq, seq);
  }

  private stepProblem(view: StepView, seq: number, task: CurrentTask): string | null {
    if (seq <= task.lastSeq) return 'steps are not in seq order';
    const index = seq - this.anchor.seq - 1;
    if (this.structuralBreakSeq !== null && seq >= this.structuralBreakSeq) return null; // behind the break: already reported
    if (index < 0 || index >= this.entries) return 'no chain entry has this seq';
    const kind = this.kinds[index];
    if (kind & CLAIMED) return 'another step view has this seq';
    this.kinds[index] = kind | CLAIMED;
    if (kind === Kind.FullOther) return 'the chain entry of this seq is not a step';
    const extra = Object.keys(view).find((key) => !STEP_VIEW_KEYS.has(key) && !(kind === Kind.FullStep && key === 'elided'));
    if (extra !== undefined) return `unexpected key "${extra}"`;
    if (LARGE_FIELDS.some((field) => view[field] !== undefined && typeof view[field] !== 'string')) return 'a large field is not a string';
    view = expandStepView(view, task.writer);
    if (kind === Kind.FullStep) {
      const entry = this.fullSteps.get(seq)!;
      this.fullSteps.delete(seq);
      const record = { ...entry } as StepLoggedRecord;
      for (const field of LARGE_FIELDS) if (view[field] !== undefined) record[field] = view[field];
      if (entry.task_id !== task.task_id) return `its record is of task ${entry.task_id}`;
      return contentProblem(record, this.sha256Hex) ?? (deepEqual(stepViewOf(record), view) ? null : 'differs from its record');
    }
    const hash = this.hashAt(seq);
    const record = rebuildStepRecord(view, task.task_id, this.hashAt(seq - 1), hash, this.sha256Hex);
    return recordHash(record, this.sha256Hex) === hash ? null : 'does not rebuild the record its chain entry names';
  }

  /** After the last task: throws the first problem found; returns the head the journal continues from. */
  end(count: unknown): ChainWalker {
    if (this.tasksSeen < this.kept.length) {
      const want = this.kept[this.tasksSeen];
      this.note(new ChainBreak('missing record', want.seq, `task ${want.task_id} (seq ${want.seq}) is missing from "tasks"`));
    }
    for (const seq of this.fullSteps.keys()) this.note(new ChainBreak('missing record', seq, `no step view holds the content of seq ${seq}`));
    if (count !== this.tasksSeen) this.note(new ChainBreak('changed content', null, `"count" is ${String(count)} but "tasks" holds ${this.tasksSeen}`));
    if (this.candidate) throw this.candidate;
    return this.walker;
  }

  private note(problem: ChainBreak): void {
    const c = this.candidate;
    if (!c || (problem.seq !== null && (c.seq === null || problem.seq < c.seq))) this.candidate = problem;
  }

  private get anchor(): ChainPoint {
    return this.header!.anchor;
  }

  private index(hash: string, kind: Kind): void {
    const i = this.entries++;
    if (i >= this.kinds.length) {
      const kinds = new Uint8Array(this.kinds.length * 2);
      kinds.set(this.kinds);
      this.kinds = kinds;
    }
    this.kinds[i] = kind;
    if (HEX64.test(hash)) this.hashes.put(this.anchor.seq + 1 + i, hash);
  }

  private hashAt(seq: number): string {
    if (seq === this.anchor.seq) return this.anchor.hash;
    return this.hashes.get(seq);
  }
}

const HEX_DIGITS = '0123456789abcdef';

function writeHex(target: Uint8Array, at: number, hex: string): void {
  for (let i = 0; i < 32; i++) target[at + i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
}

function readHex(source: Uint8Array, at: number): string {
  let hex = '';
  for (let i = 0; i < 32; i++) hex += HEX_DIGITS[source[at + i] >> 4] + HEX_DIGITS[source[at + i] & 15];
  return hex;
}

/** The doc feeder: a parsed v2 document through the core. Returns the walker the journal continues. */
export function verifyParsedDataFileV2(doc: DataFileV2, sha256Hex: Sha256Hex): { walker: ChainWalker; checked: number } {
  const verifier = new DataFileV2Verifier(sha256Hex);
  verifier.acceptHeader({ machine_id: doc.machine_id, max_tasks: doc.max_tasks, count: doc.count, head: doc.head, anchor: doc.chain.anchor });
  for (const entry of doc.chain.entries) verifier.acceptEntry(entry);
  verifier.endEntries();
  for (const task of doc.tasks as unknown[]) {
    const steps = (task as { steps?: unknown } | null)?.steps;
    verifier.acceptTaskHead(Array.isArray(steps) ? task : null);
    if (Array.isArray(steps)) for (const step of steps) verifier.acceptStepView(step);
  }
  const walker = verifier.end(doc.count);
  return { walker, checked: verifier.checked };
}
