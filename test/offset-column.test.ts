import { describe, expect, it } from 'vitest';
import { OffsetColumn } from '../daemon/offset-column.js';

/** A checkpoint's new offsets: 32 bits while they fit, every offset exact once one does not. */
describe('the offset column', () => {
  it('keeps offsets under 4 GiB in 4 bytes each', () => {
    const column = OffsetColumn.ofLength(3);
    column.set(0, 0);
    column.set(2, 2 ** 32 - 1);
    expect(column.array).toBeInstanceOf(Uint32Array);
    expect([...column.array]).toEqual([0, 0, 2 ** 32 - 1]);
  });

  it('moves to 8 bytes each at the first offset past 32 bits, keeping those it held', () => {
    const column = OffsetColumn.ofLength(4);
    column.set(0, 12);
    column.set(1, 2 ** 32 - 1);
    column.set(2, 2 ** 32);
    column.set(3, 5 * 2 ** 40 + 3);
    expect(column.array).toBeInstanceOf(Float64Array);
    expect([...column.array]).toEqual([12, 2 ** 32 - 1, 2 ** 32, 5 * 2 ** 40 + 3]);
  });

  it('moves to 8 bytes for a negative offset too, and a resized column keeps its width and its first values', () => {
    const column = OffsetColumn.ofLength(2);
    column.set(0, 7);
    column.set(1, -3);
    expect([column.get(0), column.get(1)]).toEqual([7, -3]);
    const grown = column.resized(4, 2);
    grown.set(2, 9);
    expect(grown.array).toBeInstanceOf(Float64Array);
    expect([...grown.array]).toEqual([7, -3, 9, 0]);
    const narrow = OffsetColumn.ofLength(1);
    narrow.set(0, 5);
    expect(narrow.resized(3, 1).array).toBeInstanceOf(Uint32Array);
  });
});
