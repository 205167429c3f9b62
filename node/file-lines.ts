import { readSync } from 'node:fs';

const CHUNK_BYTES = 1 << 20;
const NEWLINE = 10;

/**
 * Calls `onLine` for every "\n"-terminated line of the file from byte `from`, reading it with
 * readSync in 1 MiB chunks: `bytes[start..end)` is the line without its "\n", `fileOffset` where
 * it starts in the file. A line split across chunks is joined (so lines of any length work); the
 * buffer passed is only valid during the call. Returns the offset just after the last complete
 * line and whether bytes without a final "\n" follow it (a torn tail).
 *
 * With `stopAtByte`, the lines end at the first such byte (journal segments end at their first NUL,
 * zeros follow); `dataEnd` is its offset (or the file's end), and nothing after it is read.
 */
export function forEachLine(
  fd: number,
  from: number,
  onLine: (bytes: Buffer, start: number, end: number, fileOffset: number) => void,
  stopAtByte?: number,
): { end: number; partial: boolean; dataEnd: number } {
  return forEachLineRun(
    fd,
    from,
    (bytes, start, end, fileOffset) => {
      for (let lineStart = start; lineStart < end; ) {
        const newline = bytes.indexOf(NEWLINE, lineStart);
        onLine(bytes, lineStart, newline, fileOffset + lineStart - start);
        lineStart = newline + 1;
      }
    },
    stopAtByte,
  );
}

/**
 * forEachLine a run of lines at a time: `bytes[start..end)` holds whole lines, each with its "\n",
 * the first at `fileOffset`; a caller with a loop of its own over them makes no call per line.
 * `onRun` returning true stops the walk after that run.
 */
export function forEachLineRun(
  fd: number,
  from: number,
  onRun: (bytes: Buffer, start: number, end: number, fileOffset: number) => boolean | void,
  stopAtByte?: number,
): { end: number; partial: boolean; dataEnd: number } {
  let buffer = Buffer.allocUnsafe(CHUNK_BYTES);
  // buffer[0..filled) holds bytes from file offset `base`; a pending line starts at 0.
  let base = from;
  let filled = 0;
  for (;;) {
    if (filled === buffer.length) {
      const grown = Buffer.allocUnsafe(buffer.length * 2);
      buffer.copy(grown, 0, 0, filled);
      buffer = grown;
    }
    let read = readSync(fd, buffer, filled, buffer.length - filled, base + filled);
    if (read === 0) return { end: base, partial: filled > 0, dataEnd: base + filled };
    const stop = stopAtByte === undefined ? -1 : buffer.subarray(filled, filled + read).indexOf(stopAtByte);
    if (stop !== -1) read = stop;
    const scanFrom = filled;
    filled += read;
    const lastNewline = buffer.subarray(scanFrom, filled).lastIndexOf(NEWLINE);
    const linesEnd = lastNewline === -1 ? 0 : scanFrom + lastNewline + 1;
    if (linesEnd > 0 && onRun(buffer, 0, linesEnd, base) === true) return { end: base + linesEnd, partial: false, dataEnd: base + filled };
    if (stop !== -1) return { end: base + linesEnd, partial: filled > linesEnd, dataEnd: base + filled };
    // Keep the unfinished line at the front; only it is copied, once per chunk.
    if (linesEnd > 0) {
      buffer.copy(buffer, 0, linesEnd, filled);
      filled -= linesEnd;
      base += linesEnd;
    }
  }
}
