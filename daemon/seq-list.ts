import { OffsetColumn } from './offset-column.js';

/** Read access to a SeqList, for the pager and the checkpoint writer. */
export interface SeqListView extends Iterable<number> {
  readonly length: number;
  /** The seq at `index`, 0 <= index < length. */
  at(index: number): number;
  slice(from: number, to: number): number[];
}

const FIRST_CAPACITY = 8;

/**
 * A task's step seqs, ascending, appended one at a time: offsets from the task's own seq in an
 * OffsetColumn, 4 bytes a step (a JS array of numbers takes 8, and up to half again while it
 * grows; 1,000,000 steps in 16 tasks held 9.4 MB in such arrays), doubling as it fills.
 */
export class SeqList implements SeqListView {
  private offsets = OffsetColumn.ofLength(FIRST_CAPACITY);
  private count = 0;

  constructor(private readonly base: number) {}

  get length(): number {
    return this.count;
  }

  at(index: number): number {
    return this.base + this.offsets.get(index);
  }

  last(): number | undefined {
    return this.count === 0 ? undefined : this.at(this.count - 1);
  }

  push(seq: number): void {
    if (this.count === this.offsets.length) this.offsets = this.offsets.resized(this.count * 2, this.count);
    this.offsets.set(this.count++, seq - this.base);
  }

  slice(from: number, to: number): number[] {
    const seqs: number[] = [];
    for (let index = Math.max(0, from); index < Math.min(to, this.count); index++) seqs.push(this.at(index));
    return seqs;
  }

  *[Symbol.iterator](): Iterator<number> {
    for (let index = 0; index < this.count; index++) yield this.at(index);
  }
}
