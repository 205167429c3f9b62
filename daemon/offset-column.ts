const UINT32_MAX = 0xffffffff;

/**
 * A fixed number of offsets, 4 bytes each while every one is a whole number of 32 bits (a file
 * under 4 GiB, a task's steps within 4 billion records of it), moved to 8 bytes each at the first
 * that is not. A checkpoint holds one file offset for every record it writes (4 MB instead of 8 at
 * a million, beside the export it may run under); a task's step list holds its steps' seqs so.
 */
export class OffsetColumn {
  private constructor(private values: Uint32Array | Float64Array) {}

  static ofLength(length: number): OffsetColumn {
    return new OffsetColumn(new Uint32Array(length));
  }

  get length(): number {
    return this.values.length;
  }

  get(index: number): number {
    return this.values[index];
  }

  set(index: number, offset: number): void {
    if (this.values instanceof Uint32Array && !(offset >= 0 && offset <= UINT32_MAX)) this.values = Float64Array.from(this.values);
    this.values[index] = offset;
  }

  /** A column `length` long holding this one's first `count` offsets, as wide as this one. */
  resized(length: number, count: number): OffsetColumn {
    const values = this.values instanceof Float64Array ? new Float64Array(length) : new Uint32Array(length);
    values.set(this.values.subarray(0, count));
    return new OffsetColumn(values);
  }

  /** The offsets as they are held (replaced, not changed, when they move to 8 bytes). */
  get array(): Uint32Array | Float64Array {
    return this.values;
  }
}
