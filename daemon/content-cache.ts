import type { RecordFormValue } from './record-index.js';

export interface CachedLine {
  form: RecordFormValue;
  text: string;
}

/**
 * The newest record lines, by seq, up to a byte budget (oldest out first). Reads of recent
 * records skip the disk, and a checkpoint can repair what a foreign writer overwrote in the data
 * file in place for every record still here: a log smaller than the budget is held whole.
 */
export class ContentCache {
  private readonly lines = new Map<number, CachedLine>();
  private bytes = 0;

  constructor(private readonly budgetBytes: number) {}

  get(seq: number): CachedLine | undefined {
    return this.lines.get(seq);
  }

  put(seq: number, line: CachedLine): void {
    if (line.text.length > this.budgetBytes) return;
    const previous = this.lines.get(seq);
    if (previous) {
      this.bytes -= previous.text.length;
      this.lines.delete(seq);
    }
    this.lines.set(seq, line);
    this.bytes += line.text.length;
    for (const [oldest, { text }] of this.lines) {
      if (this.bytes <= this.budgetBytes) break;
      this.lines.delete(oldest);
      this.bytes -= text.length;
    }
  }

  delete(seq: number): void {
    const line = this.lines.get(seq);
    if (!line) return;
    this.lines.delete(seq);
    this.bytes -= line.text.length;
  }

  clear(): void {
    this.lines.clear();
    this.bytes = 0;
  }
}
