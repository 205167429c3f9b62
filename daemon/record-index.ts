import type { SharedHashes } from '../node/shared-seq-hashes.js';
import type { SpilledChunk } from '../node/spilled-hashes.js';
import type { HashSpill } from './hash-spill.js';

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

/** Records a chunk of the index holds: the index grows by a chunk, never by copying what it holds. */
export const CHUNK_RECORDS = 1 << 16;
export const CHUNK_HASH_BYTES = CHUNK_RECORDS * 32;
const HASH_BYTES = 32;
/** Chunks whose hashes stay in memory however many there are: the newest, which commits and checkpoints read most. */
const HOT_CHUNKS = 2;

/** The index's columns for CHUNK_RECORDS consecutive seqs. Untouched pages of a fresh chunk take no memory. */
class IndexChunk {
  /** Shared, so that the verify worker reads them in place (SharedHashes); null once spilled. */
  hashes: Buffer | null = Buffer.from(new SharedArrayBuffer(CHUNK_HASH_BYTES));
  spilled: SpilledChunk | null = null;
  readonly forms = new Uint8Array(CHUNK_RECORDS);
  readonly fileIds = new Uint16Array(CHUNK_RECORDS);
  readonly offsets = new Float64Array(CHUNK_RECORDS);
  readonly lengths = new Uint32Array(CHUNK_RECORDS);
  readonly tasks = new Uint32Array(CHUNK_RECORDS);
  readonly kinds = new Uint8Array(CHUNK_RECORDS);
}

/**
 * Where every record of the chain is, by seq: its hash (32 bytes) and the file, offset and length
 * of its stored line, in typed arrays: about 20 bytes a record in memory whatever its size, never
 * its content. Held in chunks of 65,536 seqs, so that growing never holds the old arrays and the
 * new at once; the hashes of all but the newest two chunks are spilled to a file (HashSpill) and
 * read back a block at a time. Covers seqs base+1 .. head; seqs at or below the anchor may be
 * dropped from the front, a chunk at a time.
 */
export class RecordIndex {
  /** The seq before the first chunk's first slot. */
  private base: number;
  private count = 0;
  private readonly chunks: IndexChunk[] = [];

  constructor(
    baseSeq: number,
    private readonly spill: HashSpill | null = null,
  ) {
    this.base = baseSeq;
  }

  get lastSeq(): number {
    return this.base + this.count;
  }

  /** Appends the next seq. */
  push(seq: number, hash: string, kind: RecordKindValue, location: RecordLocation): void {
    if (seq !== this.lastSeq + 1) throw new Error(`record index: seq ${seq} does not follow ${this.lastSeq}`);
    const i = this.count++;
    if (i % CHUNK_RECORDS === 0) this.addChunk();
    const chunk = this.chunks[this.chunks.length - 1];
    const slot = i % CHUNK_RECORDS;
    (chunk.hashes as Buffer).write(hash, slot * HASH_BYTES, HASH_BYTES, 'hex');
    chunk.kinds[slot] = kind;
    this.setLocation(seq, location);
  }

  /**
   * Appends seqs known only by their hashes (32 bytes each, binary) from `firstSeq` on: stubs of
   * unknown kind, which is what a fresh slot's zeros are, so only the hashes are copied.
   */
  pushHashes(firstSeq: number, hashes: Buffer): void {
    if (firstSeq !== this.lastSeq + 1) throw new Error(`record index: seq ${firstSeq} does not follow ${this.lastSeq}`);
    const total = hashes.length / HASH_BYTES;
    for (let done = 0; done < total; ) {
      if (this.count % CHUNK_RECORDS === 0) this.addChunk();
      const chunk = this.chunks[this.chunks.length - 1];
      const slot = this.count % CHUNK_RECORDS;
      const take = Math.min(CHUNK_RECORDS - slot, total - done);
      hashes.copy(chunk.hashes as Buffer, slot * HASH_BYTES, done * HASH_BYTES, (done + take) * HASH_BYTES);
      this.count += take;
      done += take;
    }
  }

  kindOf(seq: number): RecordKindValue {
    const chunk = this.chunkOf(seq);
    const slot = this.slotOf(seq);
    return chunk.kinds[slot] as RecordKindValue;
  }

  setKind(seq: number, kind: RecordKindValue): void {
    const chunk = this.chunkOf(seq);
    const slot = this.slotOf(seq);
    chunk.kinds[slot] = kind;
  }

  /** The forms of seqs from..to as they are now (a checkpoint's view, while trimming goes on). */
  formsOf(from: number, to: number): Uint8Array {
    const forms = new Uint8Array(Math.max(0, to - from + 1));
    for (let seq = from; seq <= to; ) {
      const chunk = this.chunkOf(seq);
      const slot = this.slotOf(seq);
      const take = Math.min(CHUNK_RECORDS - slot, to - seq + 1);
      forms.set(chunk.forms.subarray(slot, slot + take), seq - from);
      seq += take;
    }
    return forms;
  }

  /**
   * The hashes of every seq held, shared in place or where they are spilled: a verify worker reads
   * them instead of keeping its own. Valid while no chunk is dropped (the disk lock a verification
   * holds keeps checkpoints, and so compaction, out).
   */
  sharedHashes(): SharedHashes {
    const chunks = this.chunks.map((chunk) => chunk.spilled ?? ((chunk.hashes as Buffer).buffer as SharedArrayBuffer));
    return { firstSeq: this.base + 1, lastSeq: this.lastSeq, chunkRecords: CHUNK_RECORDS, chunks };
  }

  has(seq: number): boolean {
    return seq > this.base && seq <= this.lastSeq;
  }

  hashAt(seq: number): string | undefined {
    if (!this.has(seq)) return undefined;
    const chunk = this.chunkOf(seq);
    const slot = this.slotOf(seq);
    if (chunk.spilled) return (this.spill as HashSpill).reader.hashAt(chunk.spilled, slot);
    return (chunk.hashes as Buffer).toString('hex', slot * HASH_BYTES, (slot + 1) * HASH_BYTES);
  }

  location(seq: number): RecordLocation {
    const chunk = this.chunkOf(seq);
    const slot = this.slotOf(seq);
    return { form: chunk.forms[slot] as RecordFormValue, fileId: chunk.fileIds[slot], offset: chunk.offsets[slot], length: chunk.lengths[slot], task: chunk.tasks[slot] };
  }

  form(seq: number): RecordFormValue {
    const chunk = this.chunkOf(seq);
    const slot = this.slotOf(seq);
    return chunk.forms[slot] as RecordFormValue;
  }

  taskOf(seq: number): number {
    const chunk = this.chunkOf(seq);
    const slot = this.slotOf(seq);
    return chunk.tasks[slot];
  }

  /** Stored bytes of a seq's line. */
  lengthOf(seq: number): number {
    const chunk = this.chunkOf(seq);
    const slot = this.slotOf(seq);
    return chunk.lengths[slot];
  }

  setLocation(seq: number, location: RecordLocation): void {
    this.setLocationOf(seq, location.form, location.fileId, location.offset, location.length, location.task);
  }

  /** setLocation without an object: start-up places a step view per record. */
  setLocationOf(seq: number, form: RecordFormValue, fileId: number, offset: number, length: number, task: number): void {
    const chunk = this.chunkOf(seq);
    const slot = this.slotOf(seq);
    chunk.forms[slot] = form;
    chunk.fileIds[slot] = fileId;
    chunk.offsets[slot] = offset;
    chunk.lengths[slot] = length;
    chunk.tasks[slot] = task;
  }

  /**
   * Points seqs firstSeq, firstSeq+1, ... at their lines in file `fileId` (a checkpoint's), their
   * tasks unchanged; a form of 0 in `forms`, a seq the index no longer holds and a stub are left as
   * they are. One loop over the columns: a call per record (with a RecordLocation, or with plain
   * arguments) grew the daemon's old generation by about 22 bytes a record, 22 MB at a million,
   * and that was the peak RSS of `taskhistory export` beside a checkpoint.
   */
  relocateAll(firstSeq: number, fileId: number, forms: Uint8Array, offsets: Uint32Array | Float64Array, lengths: Uint32Array): void {
    for (let i = 0; i < forms.length; i++) {
      const position = firstSeq + i - this.base - 1;
      if (forms[i] === RecordForm.stub || position < 0 || position >= this.count) continue;
      const chunk = this.chunks[Math.floor(position / CHUNK_RECORDS)];
      const slot = position % CHUNK_RECORDS;
      if (chunk.forms[slot] === RecordForm.stub) continue;
      chunk.forms[slot] = forms[i];
      chunk.fileIds[slot] = fileId;
      chunk.offsets[slot] = offsets[i];
      chunk.lengths[slot] = lengths[i];
    }
  }

  /**
   * The record is trimmed: its hash stays. Its place is kept, for a checkpoint still writing it
   * (its file stays open until that checkpoint is in place).
   */
  makeStub(seq: number): void {
    const chunk = this.chunkOf(seq);
    const slot = this.slotOf(seq);
    chunk.forms[slot] = RecordForm.stub;
  }

  /** Forgets the whole chunks of seqs up to `seq` (folded into the anchor); the last chunk stays. */
  dropThrough(seq: number): void {
    while (this.chunks.length > 1 && seq - this.base >= CHUNK_RECORDS) {
      const dropped = this.chunks.shift() as IndexChunk;
      if (dropped.spilled) this.spill?.free(dropped.spilled);
      this.base += CHUNK_RECORDS;
      this.count -= CHUNK_RECORDS;
    }
  }

  /** Gives the spill back every slot this index holds there (the index is replaced). */
  release(): void {
    for (const chunk of this.chunks) if (chunk.spilled) this.spill?.free(chunk.spilled);
    this.chunks.length = 0;
  }

  /** A new newest chunk; the one that leaves the newest HOT_CHUNKS has its hashes spilled. */
  private addChunk(): void {
    this.chunks.push(new IndexChunk());
    const cooled = this.chunks[this.chunks.length - 1 - HOT_CHUNKS];
    if (!cooled || !this.spill || cooled.spilled) return;
    cooled.spilled = this.spill.spill(cooled.hashes as Buffer);
    if (cooled.spilled) cooled.hashes = null;
  }

  private chunkOf(seq: number): IndexChunk {
    if (!this.has(seq)) throw new Error(`record index: seq ${seq} is outside ${this.base + 1}..${this.lastSeq}`);
    return this.chunks[Math.floor((seq - this.base - 1) / CHUNK_RECORDS)];
  }

  /** A seq's slot in its chunk (chunkOf has checked that the index holds it). */
  private slotOf(seq: number): number {
    return (seq - this.base - 1) % CHUNK_RECORDS;
  }
}
