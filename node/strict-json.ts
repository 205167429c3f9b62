/**
 * JSON.parse that also reports the two things it silently resolves, so that a stored record
 * means one thing: a duplicate key (JSON.parse keeps the last one) and a lone UTF-16 surrogate
 * escape (`"\ud800"`, which no UTF-8 reader can reproduce, so other verifiers' hashes differ).
 *
 * Fast path: one walk of the parsed value counts its keys; a duplicate needs more `:` in the text
 * than keys in the value, so the exact scan of the text runs only when colons appear inside
 * strings too. Strings are checked for surrogates only when the text holds such an escape.
 */

export type JsonPath = (string | number)[];

export interface JsonProblem {
  path: JsonPath;
  message: string;
}

export interface StrictJson {
  value: unknown;
  problems: JsonProblem[];
}

const SURROGATE_ESCAPE = /\\u[dD][89a-fA-F]/;
/** With the u flag a paired surrogate is one code point: only a lone one matches. */
const LONE_SURROGATE = /\p{Cs}/u;
const wellFormed = (text: string) => !LONE_SURROGATE.test(text);

interface Node {
  value: object;
  parent: Node | null;
  key: string | number;
}

/** Parses `text` (throws SyntaxError as JSON.parse does) and lists its duplicate keys and lone surrogates. */
export function parseStrictJson(text: string): StrictJson {
  const value: unknown = JSON.parse(text);
  const problems: JsonProblem[] = [];
  if (value === null || typeof value !== 'object') {
    if (typeof value === 'string' && !wellFormed(value)) problems.push({ path: [], message: 'holds a lone UTF-16 surrogate' });
    return { value, problems };
  }
  const checkStrings = text.includes('\\u') && SURROGATE_ESCAPE.test(text);
  const keys = walk(value, checkStrings, problems);
  if (colonCount(text) > keys) problems.push(...duplicateKeys(text));
  return { value, problems };
}

/** Counts the keys of every object in the value; records lone surrogates when asked to look. */
function walk(root: object, checkStrings: boolean, problems: JsonProblem[]): number {
  let keys = 0;
  const stack: Node[] = [{ value: root, parent: null, key: '' }];
  const badString = (text: string, node: Node, key: string | number, what: string) => {
    if (!wellFormed(text)) problems.push({ path: [...pathOf(node), key], message: `${what} holds a lone UTF-16 surrogate` });
  };
  for (let node = stack.pop(); node; node = stack.pop()) {
    const entries: [string | number, unknown][] = Array.isArray(node.value) ? node.value.map((item, index) => [index, item]) : Object.entries(node.value);
    if (!Array.isArray(node.value)) keys += entries.length;
    for (const [key, item] of entries) {
      if (checkStrings && typeof key === 'string') badString(key, node, key, 'the key');
      if (item !== null && typeof item === 'object') stack.push({ value: item, parent: node, key });
      else if (checkStrings && typeof item === 'string') badString(item, node, key, 'the value');
    }
  }
  return keys;
}

function pathOf(node: Node): JsonPath {
  const path: JsonPath = [];
  for (let at: Node | null = node; at?.parent; at = at.parent) path.unshift(at.key);
  return path;
}

function colonCount(text: string): number {
  let count = 0;
  for (let at = text.indexOf(':'); at !== -1; at = text.indexOf(':', at + 1)) count++;
  return count;
}

interface Frame {
  /** The keys seen so far; null for an array. */
  keys: Set<string> | null;
  /** Where the scan is: the current key, or the index in an array. */
  key: string | number;
  expectingKey: boolean;
}

/** The exact scan of valid JSON text: every key that repeats within its object, with its path. */
function duplicateKeys(text: string): JsonProblem[] {
  const problems: JsonProblem[] = [];
  const frames: Frame[] = [];
  for (let at = 0; at < text.length; ) {
    const char = text.charCodeAt(at);
    const top = frames[frames.length - 1];
    if (char === 0x7b /* { */ || char === 0x5b /* [ */) {
      frames.push(char === 0x7b ? { keys: new Set(), key: '', expectingKey: true } : { keys: null, key: 0, expectingKey: false });
      at++;
    } else if (char === 0x7d /* } */ || char === 0x5d /* ] */) {
      frames.pop();
      at++;
    } else if (char === 0x2c /* , */) {
      if (top.keys) top.expectingKey = true;
      else top.key = (top.key as number) + 1;
      at++;
    } else if (char === 0x22 /* " */) {
      const end = closingQuote(text, at);
      if (top?.keys && top.expectingKey) {
        const raw = text.slice(at, end + 1);
        const key = raw.includes('\\') ? (JSON.parse(raw) as string) : raw.slice(1, -1);
        if (top.keys.has(key)) problems.push({ path: [...frames.slice(0, -1).map((frame) => frame.key), key], message: `duplicate key "${key}"` });
        top.keys.add(key);
        top.key = key;
        top.expectingKey = false;
      }
      at = end + 1;
    } else at++;
  }
  return problems;
}

/** Index of the quote that closes the string opening at `start`. */
function closingQuote(text: string, start: number): number {
  for (let at = text.indexOf('"', start + 1); ; at = text.indexOf('"', at + 1)) {
    let backslashes = 0;
    while (text.charCodeAt(at - 1 - backslashes) === 0x5c) backslashes++;
    if (backslashes % 2 === 0) return at;
  }
}
