/**
 * JSON.parse that also reports the two things it silently resolves, so that a stored record
 * means one thing: a duplicate key (JSON.parse keeps the last one) and a lone UTF-16 surrogate
 * escape (`"\ud800"`, which no UTF-8 reader can reproduce, so other verifiers' hashes differ).
 *
 * Fast path: one walk of the parsed value counts its keys and the colons in its strings; a
 * duplicate key means more `:` in the text than those, so the exact scan of the text runs only
 * when the counts differ or `\u` escapes make them unreliable. Strings are checked for
 * surrogates only when the text holds such an escape.
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
  const escapes = text.includes('\\u');
  const { keys, colonsInStrings } = walk(value, escapes && SURROGATE_ESCAPE.test(text), problems);
  // Without \u escapes every colon of a kept string is in the text: the text's colons are one per
  // key written plus those in strings (kept or overwritten), so equality proves no key repeats.
  if (escapes || colonCount(text) !== keys + colonsInStrings) problems.push(...duplicateKeys(text));
  return { value, problems };
}

/**
 * Counts the keys of every object in the value and the colons inside its strings (keys and
 * values); records lone surrogates when asked to look.
 */
function walk(root: object, checkStrings: boolean, problems: JsonProblem[]): { keys: number; colonsInStrings: number } {
  let keys = 0;
  let colonsInStrings = 0;
  const stack: Node[] = [{ value: root, parent: null, key: '' }];
  const check = (text: string, node: Node, key: string | number, what: string) => {
    if (!wellFormed(text)) problems.push({ path: [...pathOf(node), key], message: `${what} holds a lone UTF-16 surrogate` });
  };
  const visit = (node: Node, key: string | number, item: unknown) => {
    if (item !== null && typeof item === 'object') stack.push({ value: item, parent: node, key });
    else if (typeof item === 'string') {
      colonsInStrings += colonCount(item);
      if (checkStrings) check(item, node, key, 'the value');
    }
  };
  for (let node = stack.pop(); node; node = stack.pop()) {
    const value = node.value;
    if (Array.isArray(value)) {
      for (let index = 0; index < value.length; index++) visit(node, index, value[index]);
      continue;
    }
    for (const key in value) {
      keys++;
      colonsInStrings += colonCount(key);
      if (checkStrings) check(key, node, key, 'the key');
      visit(node, key, (value as Record<string, unknown>)[key]);
    }
  }
  return { keys, colonsInStrings };
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
        const key = hasBackslash(text, at + 1, end) ? (JSON.parse(text.slice(at, end + 1)) as string) : text.slice(at + 1, end);
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

function hasBackslash(text: string, from: number, to: number): boolean {
  for (let at = from; at < to; at++) if (text.charCodeAt(at) === 0x5c) return true;
  return false;
}

/** Index of the quote that closes the string opening at `start`. */
function closingQuote(text: string, start: number): number {
  for (let at = text.indexOf('"', start + 1); ; at = text.indexOf('"', at + 1)) {
    let backslashes = 0;
    while (text.charCodeAt(at - 1 - backslashes) === 0x5c) backslashes++;
    if (backslashes % 2 === 0) return at;
  }
}
