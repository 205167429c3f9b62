import { describe, expect, it } from 'vitest';
import { SeqList } from '../daemon/seq-list.js';

/** A task's step seqs in typed offsets: every seq back exactly, through growth and past 32 bits. */
describe('the seq list', () => {
  it('keeps every seq pushed through many doublings, by index, by slice and by iteration', () => {
    const base = 1_000_003;
    const list = new SeqList(base);
    const pushed: number[] = [];
    expect(list.length).toBe(0);
    expect(list.last()).toBeUndefined();
    for (let step = 1; step <= 10_000; step++) {
      const seq = base + step * 3;
      list.push(seq);
      pushed.push(seq);
      expect(list.last()).toBe(seq);
    }
    expect(list.length).toBe(pushed.length);
    expect([...list]).toEqual(pushed);
    expect(pushed.every((seq, index) => list.at(index) === seq)).toBe(true);
    expect(list.slice(4_990, 5_010)).toEqual(pushed.slice(4_990, 5_010));
  });

  it('clamps a slice to the list, as Array#slice does for in-range callers', () => {
    const list = new SeqList(10);
    for (const seq of [11, 12, 13]) list.push(seq);
    expect(list.slice(-5, 2)).toEqual([11, 12]);
    expect(list.slice(1, 99)).toEqual([12, 13]);
    expect(list.slice(3, 5)).toEqual([]);
  });

  it('moves to 64-bit floats once an offset passes 32 bits, keeping what it held', () => {
    const list = new SeqList(5);
    list.push(6);
    list.push(7);
    const far = 5 + 2 ** 32 + 17;
    list.push(far);
    list.push(far + 1);
    expect([...list]).toEqual([6, 7, far, far + 1]);
    expect(list.last()).toBe(far + 1);
  });

  it('holds a seq below its base (an offset that is negative) exactly', () => {
    const list = new SeqList(100);
    list.push(101);
    list.push(40);
    expect([...list]).toEqual([101, 40]);
  });
});
