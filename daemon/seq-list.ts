/** Read access to a SeqList, for the pager and the checkpoint writer. */
export interface SeqListView extends Iterable<number> {
  readonly length: number;
  /** The seq at `index`, 0 <= index < length. */
  at(index: number): number;
  slice(from: number, to: number): number[];
}

const FIRST_CAPACITY = 8;
const UINT32_MAX = 0xffffffff;

/**
 * A task's step seqs, ascending, appended one at a time: offsets from the task's own seq in a
 * Uint32Array, 4 bytes a step (a JS array of numbers takes 8, and up to half again while it grows;
 * 1,000,000 steps in 16 tasks held 9.4 MB in such arrays). An offset past 32 bits (a task running
 * across 4 billion records) moves the list to a Float64Array once.
 */
export class SeqList implements SeqListView {
  private offsets: Uint32Array | Float64Array = new Uint32Array(FIRST_CAPACITY);
  private count = 0;

  constructor(private readonly base: number) {}

  get length(): number {
    return this.count;
  }

  at(index: number): number {
    return this.base + this.offsets[index];
  }

  last(): number | undefined {
    return this.count === 0 ? undefined : this.at(this.count - 1);
  }

  push(seq: number): void {
    const offset = seq - this.base;
    const fits = this.offsets instanceof Float64Array || (offset >= 0 && offset <= UINT32_MAX);
    if (this.count === this.offsets.length || !fits) this.regrow(fits ? Uint32Array : Float64Array);
    this.offsets[this.count++] = offset;
  }

  slice(from: number, to: number): number[] {
    const seqs: number[] = [];
    for (let index = Math.max(0, from); index < Math.min(to, this.count); index++) seqs.push(this.at(index));
    return seqs;
  }

  *[Symbol.iterator](): Iterator<number> {
    for (let index = 0; index < this.count; index++) yield this.at(index);
  }

  private regrow(kind: typeof Uint32Array | typeof Float64Array): void {
    const capacity = this.count === this.offsets.length ? this.offsets.length * 2 : this.offsets.length;
    const grown = this.offsets instanceof Float64Array ? new Float64Array(capacity) : new kind(capacity);
    grown.set(this.offsets.subarray(0, this.count));
    this.offsets = grown;
  }
}
