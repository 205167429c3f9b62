const UINT32_MAX = 0xffffffff;

/**
 * A fixed number of file offsets, 4 bytes each while every one fits in 32 bits (a file under
 * 4 GiB), moved to 8 bytes each at the first that does not. A checkpoint holds one for every
 * record it writes: 4 MB instead of 8 at a million, beside the export it may run under.
 */
export class OffsetColumn {
  private values: Uint32Array | Float64Array;

  constructor(length: number) {
    this.values = new Uint32Array(length);
  }

  set(index: number, offset: number): void {
    if (offset > UINT32_MAX && this.values instanceof Uint32Array) this.values = Float64Array.from(this.values);
    this.values[index] = offset;
  }

  /** The offsets as they are held (replaced, not changed, when they move to 8 bytes). */
  get array(): Uint32Array | Float64Array {
    return this.values;
  }
}
