import { describe, expect, it } from 'vitest';
import { OffsetColumn } from '../daemon/offset-column.js';

/** A checkpoint's new offsets: 32 bits while they fit, every offset exact once one does not. */
describe('the offset column', () => {
  it('keeps offsets under 4 GiB in 4 bytes each', () => {
    const column = new OffsetColumn(3);
    column.set(0, 0);
    column.set(2, 2 ** 32 - 1);
    expect(column.array).toBeInstanceOf(Uint32Array);
    expect([...column.array]).toEqual([0, 0, 2 ** 32 - 1]);
  });

  it('moves to 8 bytes each at the first offset past 32 bits, keeping those it held', () => {
    const column = new OffsetColumn(4);
    column.set(0, 12);
    column.set(1, 2 ** 32 - 1);
    column.set(2, 2 ** 32);
    column.set(3, 5 * 2 ** 40 + 3);
    expect(column.array).toBeInstanceOf(Float64Array);
    expect([...column.array]).toEqual([12, 2 ** 32 - 1, 2 ** 32, 5 * 2 ** 40 + 3]);
  });
});
