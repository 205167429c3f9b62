/**
 * Stored text made safe to print on a terminal: control characters are shown as escapes, never
 * sent raw, so a stored ESC[8m cannot hide text, an OSC cannot set the title, a CR cannot rewrite
 * the line and a bidi override cannot reorder it. Pure functions, for every readable CLI view.
 */

/** C0 controls, DEL, C1 controls, the Arabic letter mark, LRM/RLM, line/paragraph separators, bidi embeddings, overrides and isolates. */
const UNSAFE = '\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200e\\u200f\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069';
const UNSAFE_IN_LINE = new RegExp(`[${UNSAFE}]`, 'g');
/** The same, but newlines and tabs stay: they lay out multi-line text and cannot rewrite anything. */
const UNSAFE_IN_BLOCK = new RegExp(`(?![\\n\\t])[${UNSAFE}]`, 'g');

const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

function escaped(char: string): string {
  const code = char.charCodeAt(0);
  return NAMED[char] ?? (code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`);
}

/** Text for one line of output: every control character escaped, newlines too. */
export function visibleLine(text: string): string {
  return text.replace(UNSAFE_IN_LINE, escaped);
}

/** Text printed over several lines: newlines and tabs kept, every other control character escaped. */
export function visibleBlock(text: string): string {
  return text.replace(UNSAFE_IN_BLOCK, escaped);
}
