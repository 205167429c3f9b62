import type { RecordFormValue } from './record-index.js';

export interface CachedLine {
  form: RecordFormValue;
  text: string;
}

interface Slot {
  form: RecordFormValue;
  start: number;
  length: number;
}

/**
 * The newest record lines, by seq, up to a byte budget (oldest out first). Reads of recent
 * records skip the disk, and a checkpoint can repair what a foreign writer overwrote in the data
 * file in place for every record still here: a log smaller than the budget is held whole.
 *
 * The bytes live in one ring buffer outside the JS heap, laid out oldest to newest from `head`
 * round: cached strings would each outlive a few young-generation collections and pile up in the
 * old generation as garbage (tens of MB of peak RSS at full speed).
 */
export class ContentCache {
  private ring: Buffer | null = null;
  /** In insertion order, which is ring order: the first slot is the oldest. */
  private readonly slots = new Map<number, Slot>();
  /** Where the next line goes: the end of the newest one. */
  private head = 0;

  constructor(private readonly budgetBytes: number) {}

  get(seq: number): CachedLine | undefined {
    const slot = this.slots.get(seq);
    if (!slot) return undefined;
    return { form: slot.form, text: (this.ring as Buffer).toString('utf8', slot.start, slot.start + slot.length) };
  }

  put(seq: number, line: CachedLine): void {
    this.slots.delete(seq);
    const length = Buffer.byteLength(line.text);
    if (length > this.budgetBytes) return;
    this.ring ??= Buffer.allocUnsafe(this.budgetBytes);
    if (this.head + length > this.budgetBytes) {
      // What lies past the head is the previous lap's oldest: it goes before the front is reused.
      this.evictFromHead(this.budgetBytes);
      this.head = 0;
    }
    this.evictFromHead(this.head + length);
    this.ring.write(line.text, this.head, 'utf8');
    this.slots.set(seq, { form: line.form, start: this.head, length });
    this.head += length;
  }

  /** Drops the oldest slots that start in [head, end): those a line written at the head overwrites. */
  private evictFromHead(end: number): void {
    for (const [seq, slot] of this.slots) {
      if (slot.start < this.head || slot.start >= end) return;
      this.slots.delete(seq);
    }
  }

  delete(seq: number): void {
    this.slots.delete(seq);
  }

  clear(): void {
    this.slots.clear();
    this.head = 0;
  }
}
