import { canonicalize, type Sha256Hex } from './canonical.js';

/**
 * The chain: every change is an immutable record with a gap-free `seq` (from 1), the `hash` of the
 * record before it (`prev_hash`, GENESIS_HASH for seq 1) and its own `hash`.
 *
 * hash = SHA-256( canonicalize( the record without `hash`, `output`, `error`, `recovery`, `elided` ) )
 *
 * The large fields `output`, `error` and `recovery` enter the hash only through their digests
 * `output_sha256`, `error_sha256`, `recovery_sha256` (SHA-256 of the field's UTF-8 text), which the
 * record keeps. A field may later be stored shortened or removed: `elided[field]` then says
 * `{state: 'truncated'|'removed', length}` (length of the original in UTF-8 bytes) and verification
 * skips comparing that field with its digest. Without such a marker a stored field must match its digest.
 * Only `step_logged` records may carry large fields or `elided`; on any other record they are damage.
 */
export const GENESIS_HASH = '0'.repeat(64);

export const LARGE_FIELDS = ['output', 'error', 'recovery'] as const;
export type LargeField = (typeof LARGE_FIELDS)[number];

export const TASK_MODES = ['autonomous', 'approve-once', 'step-by-step'] as const;
export type TaskMode = (typeof TASK_MODES)[number];
export const STEP_STATUSES = ['success', 'failed'] as const;
export type StepStatus = (typeof STEP_STATUSES)[number];
export const FINAL_STATUSES = ['completed', 'failed', 'aborted'] as const;
export type FinalStatus = (typeof FINAL_STATUSES)[number];

/** Who wrote a record, as the kernel reported the peer (inside the hash like any other member). */
export interface Writer {
  uid: number;
  gid: number;
  pid: number;
  /** /proc/PID/comm and the /proc/PID/exe link at accept time; null when /proc hid them (the peer was gone, or hidepid). */
  comm: string | null;
  exe: string | null;
}

interface RecordHeader {
  seq: number;
  prev_hash: string;
  hash: string;
  /** Unix seconds with sub-second precision, as Python's time.time(). */
  ts: number;
  writer?: Writer;
}

export interface TaskCreatedRecord extends RecordHeader {
  type: 'task_created';
  task_id: string;
  description: string;
  mode: TaskMode;
  /** The planned steps, kept as given. */
  plan: unknown[];
  machine_id: string;
  agent?: string;
}

export interface ElidedField {
  state: 'truncated' | 'removed';
  length: number;
}

export interface StepLoggedRecord extends RecordHeader {
  type: 'step_logged';
  task_id: string;
  step: number;
  command: string;
  status: StepStatus;
  output?: string;
  error?: string;
  recovery?: string;
  output_sha256?: string;
  error_sha256?: string;
  recovery_sha256?: string;
  started_at?: number;
  duration_ms?: number;
  exit_code?: number;
  elided?: Partial<Record<LargeField, ElidedField>>;
}

export interface TaskCompletedRecord extends RecordHeader {
  type: 'task_completed';
  task_id: string;
  final_status: FinalStatus;
}

/** Written by the daemon when its data file was changed or deleted by someone else. */
export interface TamperDetectedRecord extends RecordHeader {
  type: 'tamper_detected';
  reason: string;
  data_file: string;
  evidence_file?: string;
  evidence_sha256?: string;
  first_bad_seq?: number | null;
}

export type ChainRecord = TaskCreatedRecord | StepLoggedRecord | TaskCompletedRecord | TamperDetectedRecord;
export type RecordType = ChainRecord['type'];

/** A record body before it is placed in the chain. */
export type UnchainedRecord = DistributiveOmit<ChainRecord, 'seq' | 'prev_hash' | 'hash'>;
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** The members a record's hash leaves out. */
const UNHASHED_FIELDS: ReadonlySet<string> = new Set(['hash', ...LARGE_FIELDS, 'elided']);
const DIGEST_FIELD = { output: 'output_sha256', error: 'error_sha256', recovery: 'recovery_sha256' } as const;

export function recordHash(record: Omit<ChainRecord, 'hash'> | ChainRecord, sha256Hex: Sha256Hex): string {
  return sha256Hex(canonicalize(record, UNHASHED_FIELDS));
}

/**
 * Places a record body after `prev` in the chain: sets seq, prev_hash and the digests, computes
 * hash. The body becomes the record (no copy: this runs once per logged step).
 */
export function chainRecord(body: UnchainedRecord, prevSeq: number, prevHash: string, sha256Hex: Sha256Hex): ChainRecord {
  const record = body as ChainRecord;
  record.seq = prevSeq + 1;
  record.prev_hash = prevHash;
  if (record.type === 'step_logged') {
    for (const field of LARGE_FIELDS) {
      const text = record[field];
      if (text !== undefined) record[DIGEST_FIELD[field]] = sha256Hex(text);
    }
  }
  record.hash = recordHash(record, sha256Hex);
  return record;
}

/** A record reduced to its place in the chain, kept for records trimmed out of the file. */
export type RecordStub = [seq: number, hash: string];

export interface ChainPoint {
  seq: number;
  hash: string;
}
