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
  if (Array.isArray(value)) return `[${value.map((item) => canonicalize(item)).join(',')}]`;
  const object = value as Record<string, unknown>;
  let text = '{';
  // Default sort compares UTF-16 code units, exactly as RFC 8785 asks.
  for (const key of Object.keys(object).sort()) {
    const member = object[key];
    if (member === undefined || leaveOut?.has(key)) continue;
    text += `${text.length > 1 ? ',' : ''}${JSON.stringify(key)}:${canonicalize(member)}`;
  }
  return `${text}}`;
}

/**
 * SHA-256 of a text's UTF-8 bytes in lower-case hex. Passed in rather than imported, so the contract
 * stays pure: Node code uses its native hash (`node/sha256.ts`), a browser may use any implementation.
 */
export type Sha256Hex = (text: string) => string;
