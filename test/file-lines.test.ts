import { closeSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { forEachLine } from '../node/file-lines.js';
import { tempDir } from './processes.js';

interface Line {
  text: string;
  offset: number;
}

/** Every line forEachLine reports for `content` read from `from`, and its result. */
function linesOf(content: Buffer | string, from = 0): { lines: Line[]; result: { end: number; partial: boolean; dataEnd: number } } {
  const file = join(tempDir('taskhistory-lines-'), 'f');
  writeFileSync(file, content);
  const fd = openSync(file, 'r');
  try {
    const lines: Line[] = [];
    const result = forEachLine(fd, from, (bytes, start, end, fileOffset) => lines.push({ text: bytes.toString('utf8', start, end), offset: fileOffset }));
    return { lines, result };
  } finally {
    closeSync(fd);
  }
}

/** The expected lines: split on "\n", with their byte offsets. */
function expectedLines(content: string, from = 0): Line[] {
  const lines: Line[] = [];
  let offset = from;
  const bytes = Buffer.from(content).subarray(from).toString('utf8');
  const parts = bytes.split('\n');
  parts.pop(); // the tail after the last "\n"
  for (const text of parts) {
    lines.push({ text, offset });
    offset += Buffer.byteLength(text) + 1;
  }
  return lines;
}

const MiB = 1 << 20;

describe('forEachLine', () => {
  it('reports every line with its file offset, including empty lines and lines across 1 MiB chunk borders', () => {
    const parts: string[] = [];
    for (let i = 0, length = 0; length < 3.5 * MiB; i++) {
      const line = `${'é'.repeat(i % 997)}${i}\n${i % 50 === 0 ? '\n' : ''}`;
      parts.push(line);
      length += line.length;
    }
    const content = parts.join('');
    const { lines, result } = linesOf(content);
    expect(lines).toEqual(expectedLines(content));
    expect(result).toEqual({ end: Buffer.byteLength(content), partial: false, dataEnd: Buffer.byteLength(content) });
  });

  it('joins a line longer than a chunk (2 MiB and 5 MiB) and the lines around it', () => {
    const content = `short\n${'a'.repeat(2 * MiB)}\n${'b'.repeat(5 * MiB + 3)}\nend\n`;
    const { lines, result } = linesOf(content);
    expect(lines.map((l) => [l.text.length, l.offset])).toEqual(expectedLines(content).map((l) => [l.text.length, l.offset]));
    expect(lines[1].text).toBe('a'.repeat(2 * MiB));
    expect(result.end).toBe(content.length);
  });

  it('starts at `from`, and says where the complete lines end when a torn tail follows', () => {
    const content = 'first\nsecond\nthird\ntorn tail without newline';
    const from = 'first\n'.length;
    const { lines, result } = linesOf(content, from);
    expect(lines).toEqual(expectedLines(content, from));
    expect(lines[0]).toEqual({ text: 'second', offset: 6 });
    expect(result).toMatchObject({ end: content.lastIndexOf('\n') + 1, partial: true });
  });

  it('reports nothing for an empty file or a start at its end', () => {
    expect(linesOf('')).toEqual({ lines: [], result: { end: 0, partial: false, dataEnd: 0 } });
    expect(linesOf('a\n', 2)).toEqual({ lines: [], result: { end: 2, partial: false, dataEnd: 2 } });
    expect(linesOf('no newline')).toEqual({ lines: [], result: { end: 0, partial: true, dataEnd: 10 } });
  });
});

describe('forEachLine with stopAtByte', () => {
  it('ends the lines at the first such byte and says where it is', () => {
    const content = Buffer.concat([Buffer.from('one\ntwo\nthr'), Buffer.alloc(5), Buffer.from('x\n'), Buffer.alloc(3)]);
    const file = join(tempDir('taskhistory-lines-'), 'f');
    writeFileSync(file, content);
    const fd = openSync(file, 'r');
    const lines: string[] = [];
    try {
      expect(forEachLine(fd, 0, (bytes, start, end) => lines.push(bytes.toString('utf8', start, end)), 0)).toEqual({ end: 8, partial: true, dataEnd: 11 });
    } finally {
      closeSync(fd);
    }
    expect(lines).toEqual(['one', 'two']);
  });
});
