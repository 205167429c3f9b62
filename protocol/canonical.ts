/**
 * The canonical serialization that record hashes are computed over: RFC 8785 (JSON Canonicalization
 * Scheme). Written out here so that any language can reproduce it:
 *
 * - Objects: members sorted by key, comparing keys as sequences of UTF-16 code units (Python:
 *   `sorted(keys, key=lambda k: k.encode('utf-16-be'))`). No whitespace anywhere: `{"a":1,"b":[1,2]}`.
 * - Members whose value is absent are left out; there is no `undefined`. `null` is written `null`.
 * - Strings: UTF-8, with only `"` -> `\"`, `\` -> `\\`, and U+0000..U+001F escaped: `\b \t \n \f \r` by
 *   their short forms, the rest as `\u00xx` (lower-case hex). Everything else is written as itself.
 * - Numbers: IEEE-754 doubles written as ECMAScript `Number.prototype.toString` does: integers
 *   without a fraction or exponent (`1`, not `1.0`), `-0` as `0`, the shortest digits that round-trip,
 *   exponent form (`1e+21`, `1e-7`) only below 1e-6 or at 1e21 and above. NaN and Infinity cannot occur.
 * - `true`, `false`, arrays in their given order.
 *
 * The SHA-256 of those UTF-8 bytes, in lower-case hex, is a digest. `leaveOut` names top-level
 * members to skip (a record's unhashed fields), saving a copy of the object.
 */
export function canonicalize(value: unknown, leaveOut?: ReadonlySet<string>): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) {
    let text = '[';
    for (let index = 0; index < value.length; index++) text += (index === 0 ? '' : ',') + canonicalize(value[index]);
    return `${text}]`;
  }
  const object = value as Record<string, unknown>;
  const { sortedKeys, memberPrefixes } = shapeOf(Object.keys(object));
  let text = '';
  for (let index = 0; index < sortedKeys.length; index++) {
    const member = object[sortedKeys[index]];
    if (member === undefined || leaveOut?.has(sortedKeys[index])) continue;
    text += (text === '' ? '{' : ',') + memberPrefixes[index] + (typeof member === 'string' ? JSON.stringify(member) : canonicalize(member));
  }
  return text === '' ? '{}' : `${text}}`;
}

/** An object's keys in canonical order, each with its `"key":` text. */
interface Shape {
  keys: readonly string[];
  sortedKeys: readonly string[];
  memberPrefixes: readonly string[];
}

/**
 * The shapes met lately, by key count: records of one kind share a key list (Object.keys in
 * the same order), so their sorted order and member prefixes are worked out once. A few per
 * count, the newest replacing the oldest, so objects of ever new shapes cost one short miss.
 * Only small objects are kept: a client's wide objects must not grow the cache.
 */
const SHAPES_PER_KEY_COUNT = 4;
const MOST_KEYS_CACHED = 32;
const recentShapes: Shape[][] = [];

function shapeOf(keys: string[]): Shape {
  if (keys.length > MOST_KEYS_CACHED) return shapeFrom(keys);
  const bucket = (recentShapes[keys.length] ??= []);
  next: for (const shape of bucket) {
    for (let index = 0; index < keys.length; index++) if (shape.keys[index] !== keys[index]) continue next;
    return shape;
  }
  const shape = shapeFrom(keys);
  if (bucket.unshift(shape) > SHAPES_PER_KEY_COUNT) bucket.pop();
  return shape;
}

function shapeFrom(keys: string[]): Shape {
  // Default sort compares UTF-16 code units, exactly as RFC 8785 asks.
  const sortedKeys = [...keys].sort();
  return { keys, sortedKeys, memberPrefixes: sortedKeys.map((key) => `${JSON.stringify(key)}:`) };
}

/**
 * SHA-256 of a text's UTF-8 bytes in lower-case hex. Passed in rather than imported, so the contract
 * stays pure: Node code uses its native hash (`node/sha256.ts`), a browser may use any implementation.
 */
export type Sha256Hex = (text: string) => string;
