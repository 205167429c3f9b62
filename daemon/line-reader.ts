/**
 * Newline framing: splits a byte stream into `\n`-terminated lines of at most maxBytes. A longer
 * line is dropped as it arrives (never held whole) and reported once its newline comes.
 */
export class LineReader {
  private parts: Buffer[] = [];
  private size = 0;
  private skipping = false;

  constructor(
    private readonly maxBytes: number,
    private readonly onLine: (line: string) => void,
    private readonly onOversize: () => void,
  ) {}

  /** Bytes of the unfinished line held in memory. */
  get heldBytes(): number {
    return this.size;
  }

  push(chunk: Buffer): void {
    let start = 0;
    for (let newline = chunk.indexOf(0x0a); newline !== -1; newline = chunk.indexOf(0x0a, start)) {
      this.take(chunk.subarray(start, newline));
      this.endLine();
      start = newline + 1;
    }
    this.take(chunk.subarray(start));
  }

  /** The stream ended: a last line without its newline still counts. */
  end(): void {
    this.endLine();
  }

  /** Forgets the unfinished line (the connection is being cut off). */
  discard(): void {
    this.parts = [];
    this.size = 0;
  }

  private take(part: Buffer): void {
    if (this.skipping || part.length === 0) return;
    if (this.size + part.length > this.maxBytes) {
      this.skipping = true;
      this.discard();
      return;
    }
    this.parts.push(part);
    this.size += part.length;
  }

  private endLine(): void {
    if (this.skipping) {
      this.skipping = false;
      this.onOversize();
      return;
    }
    const line = Buffer.concat(this.parts, this.size).toString('utf8').trim();
    this.discard();
    if (line) this.onLine(line);
  }
}
