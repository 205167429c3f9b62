/** How a seq's content is stored. */
export const RecordForm = {
  /** Trimmed away by max_tasks, or not indexed: only its hash is known. */
  stub: 0,
  /** A whole record as one JSON line (a journal line, or a full-record entry of the data file). */
  recordLine: 1,
  /** A step record kept as its step view line in the data file; the record is rebuilt from it. */
  stepViewLine: 2,
} as const;
export type RecordFormValue = (typeof RecordForm)[keyof typeof RecordForm];

/** What a seq's record is, as far as the index needs to know. */
export const RecordKind = { unknown: 0, taskCreated: 1, stepLogged: 2, taskCompleted: 3, daemon: 4 } as const;
export type RecordKindValue = (typeof RecordKind)[keyof typeof RecordKind];

export function recordKindOf(type: string): RecordKindValue {
  if (type === 'task_created') return RecordKind.taskCreated;
  if (type === 'step_logged') return RecordKind.stepLogged;
  if (type === 'task_completed') return RecordKind.taskCompleted;
  return RecordKind.daemon;
}

export interface RecordLocation {
  form: RecordFormValue;
  fileId: number;
  offset: number;
  length: number;
  /** Ordinal of the task the record belongs to, 0 for none. */
  task: number;
}

const INITIAL_CAPACITY = 1024;
const HASH_BYTES = 32;

/**
 * Where every record of the chain is, by seq: its hash (32 bytes) and the file, offset and length
 * of its stored line, in typed arrays: about 50 bytes a record whatever its size, never its content.
 * Covers seqs base+1 .. head; seqs at or below the anchor may be dropped from the front.
 */
export class RecordIndex {
  private base: number;
  private count = 0;
  private hashes = new Uint8Array(INITIAL_CAPACITY * HASH_BYTES);
  private forms = new Uint8Array(INITIAL_CAPACITY);
  private fileIds = new Uint16Array(INITIAL_CAPACITY);
  private offsets = new Float64Array(INITIAL_CAPACITY);
  private lengths = new Uint32Array(INITIAL_CAPACITY);
  private tasks = new Uint32Array(INITIAL_CAPACITY);
  private kinds = new Uint8Array(INITIAL_CAPACITY);

  constructor(baseSeq: number) {
    this.base = baseSeq;
  }

  get lastSeq(): number {
    return this.base + this.count;
  }

  /** Appends the next seq. */
  push(seq: number, hash: string, kind: RecordKindValue, location: RecordLocation): void {
    if (seq !== this.lastSeq + 1) throw new Error(`record index: seq ${seq} does not follow ${this.lastSeq}`);
    if (this.count === this.forms.length) this.grow();
    const i = this.count++;
    this.hashes.set(Buffer.from(hash, 'hex'), i * HASH_BYTES);
    this.kinds[i] = kind;
    this.setLocation(seq, location, i);
  }

  kindOf(seq: number): RecordKindValue {
    return this.kinds[this.slot(seq)] as RecordKindValue;
  }

  setKind(seq: number, kind: RecordKindValue): void {
    this.kinds[this.slot(seq)] = kind;
  }

  /** The forms of seqs from..to as they are now (a checkpoint's view, while trimming goes on). */
  formsOf(from: number, to: number): Uint8Array {
    if (to < from) return new Uint8Array(0);
    return this.forms.slice(this.slot(from), this.slot(to) + 1);
  }

  has(seq: number): boolean {
    return seq > this.base && seq <= this.lastSeq;
  }

  hashAt(seq: number): string | undefined {
    if (!this.has(seq)) return undefined;
    const i = seq - this.base - 1;
    return Buffer.from(this.hashes.buffer, this.hashes.byteOffset + i * HASH_BYTES, HASH_BYTES).toString('hex');
  }

  location(seq: number): RecordLocation {
    const i = this.slot(seq);
    return { form: this.forms[i] as RecordFormValue, fileId: this.fileIds[i], offset: this.offsets[i], length: this.lengths[i], task: this.tasks[i] };
  }

  form(seq: number): RecordFormValue {
    return this.forms[this.slot(seq)] as RecordFormValue;
  }

  taskOf(seq: number): number {
    return this.tasks[this.slot(seq)];
  }

  /** Stored bytes of a seq's line. */
  lengthOf(seq: number): number {
    return this.lengths[this.slot(seq)];
  }

  setLocation(seq: number, location: RecordLocation, i = this.slot(seq)): void {
    this.forms[i] = location.form;
    this.fileIds[i] = location.fileId;
    this.offsets[i] = location.offset;
    this.lengths[i] = location.length;
    this.tasks[i] = location.task;
  }

  /**
   * The record is trimmed: its hash stays. Its place is kept, for a checkpoint still writing it
   * (its file stays open until that checkpoint is in place).
   */
  makeStub(seq: number): void {
    this.forms[this.slot(seq)] = RecordForm.stub;
  }

  /** Forgets seqs up to `seq` (folded into the anchor), when that frees at least half the arrays. */
  dropThrough(seq: number): void {
    const drop = Math.min(seq - this.base, this.count);
    if (drop < INITIAL_CAPACITY || drop * 2 < this.count) return;
    const keep = this.count - drop;
    this.hashes.copyWithin(0, drop * HASH_BYTES, this.count * HASH_BYTES);
    for (const array of [this.forms, this.fileIds, this.offsets, this.lengths, this.tasks, this.kinds]) array.copyWithin(0, drop, this.count);
    this.base += drop;
    this.count = keep;
  }

  private slot(seq: number): number {
    if (!this.has(seq)) throw new Error(`record index: seq ${seq} is outside ${this.base + 1}..${this.lastSeq}`);
    return seq - this.base - 1;
  }

  private grow(): void {
    const capacity = this.forms.length * 2;
    const grown = <T extends Uint8Array | Uint16Array | Uint32Array | Float64Array>(array: T, size: number): T => {
      const next = new (array.constructor as new (n: number) => T)(size);
      next.set(array);
      return next;
    };
    this.hashes = grown(this.hashes, capacity * HASH_BYTES);
    this.forms = grown(this.forms, capacity);
    this.fileIds = grown(this.fileIds, capacity);
    this.offsets = grown(this.offsets, capacity);
    this.lengths = grown(this.lengths, capacity);
    this.tasks = grown(this.tasks, capacity);
    this.kinds = grown(this.kinds, capacity);
  }
}
