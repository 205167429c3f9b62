import { describe, expect, it } from 'vitest';
import { canonicalize } from '../protocol/canonical.js';

describe('canonicalize (RFC 8785)', () => {
  it('sorts members by UTF-16 code units at every depth and leaves out undefined ones', () => {
    // U+1F600 is the surrogate pair D83D DE00, which sorts before U+FB01 by code units (not by code points).
    const value = { b: 1, a: { z: [3, { y: null, x: true }], '\u{1F600}': 'e', '\uFB01': 'f' }, c: undefined, A: 'upper', '': 0 };
    expect(canonicalize(value)).toBe('{"":0,"A":"upper","a":{"z":[3,{"x":true,"y":null}],"\u{1F600}":"e","\uFB01":"f"},"b":1}');
  });

  it('writes numbers and strings as ECMAScript does', () => {
    expect(canonicalize([1.0, -0, 1e21, 1e-7, 0.1, 123456789012345680000, '\u0000\n"\\/\u00e9'])).toBe('[1,0,1e+21,1e-7,0.1,123456789012345680000,"\\u0000\\n\\"\\\\/\u00e9"]');
  });

  it('leaves out the named top-level members only', () => {
    expect(canonicalize({ b: { hash: 1 }, hash: 2, a: 3 }, new Set(['hash']))).toBe('{"a":3,"b":{"hash":1}}');
  });

  it('sorts many keys, already in order, reversed and mixed, as Array.sort does', () => {
    const keys = Array.from({ length: 40 }, (_, i) => `k${(i * 7919) % 97}`);
    for (const order of [keys, [...keys].sort(), [...keys].sort().reverse()]) {
      const value = Object.fromEntries(order.map((key) => [key, key]));
      expect(canonicalize(value)).toBe(`{${[...new Set(keys)].sort().map((key) => `"${key}":"${key}"`).join(',')}}`);
    }
  });
});

describe('canonicalize of many objects of one kind', () => {
  it('gives each object its own canonical text whatever shapes came before', () => {
    // Five shapes of three keys (more than are remembered per key count), in turn and over again.
    const orders = [['a', 'b', 'c'], ['c', 'b', 'a'], ['b', 'a', 'c'], ['a', 'c', 'b'], ['x', 'y', 'z']];
    for (let round = 0; round < 3; round++) {
      for (const order of orders) {
        const value = Object.fromEntries(order.map((key, index) => [key, `${key}${index}${round}`]));
        const expected = `{${[...order].sort().map((key) => `"${key}":"${value[key]}"`).join(',')}}`;
        expect(canonicalize(value)).toBe(expected);
      }
    }
  });

  it('writes a wide object the same way however often it is seen', () => {
    const value = Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`k${49 - i}`, i]));
    const once = canonicalize(value);
    expect(canonicalize({ ...value })).toBe(once);
    expect(once.startsWith('{"k0":49,"k1":48,"k10":39')).toBe(true);
  });
});
