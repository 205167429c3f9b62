import { describe, expect, it } from 'vitest';
import { ContentCache } from '../daemon/content-cache.js';
import { RecordForm } from '../daemon/record-index.js';
import { seededRandom } from '../node/seeded-random.js';

/** The ring of recent lines: exact text back, newest kept, oldest out first, never over budget. */
describe('the content cache', () => {
  it('keeps the newest lines up to its budget across many laps of its ring, each exactly as put', () => {
    const budget = 64 * 1024;
    const maxLine = 3000;
    const cache = new ContentCache(budget);
    const random = seededRandom(7);
    const order: number[] = [];
    const texts = new Map<number, string>();
    for (let seq = 1; seq <= 5000; seq++) {
      const length = 1 + Math.floor(random() * maxLine);
      const text = `${seq}:é`.padEnd(length, String.fromCharCode(97 + (seq % 26)));
      cache.put(seq, { form: RecordForm.recordLine, text });
      texts.set(seq, text);
      order.push(seq);
      if (seq % 97 !== 0) continue;
      const kept = order.filter((s) => cache.get(s) !== undefined);
      // A suffix of what was put: the newest, in order, with nothing missing in between.
      expect(kept).toEqual(order.slice(order.length - kept.length));
      for (const s of kept) expect(cache.get(s)).toEqual({ form: RecordForm.recordLine, text: texts.get(s) });
      const keptBytes = kept.reduce((sum, s) => sum + Buffer.byteLength(texts.get(s) as string), 0);
      expect(keptBytes).toBeLessThanOrEqual(budget);
      expect(keptBytes).toBeGreaterThan(budget - 2 * maxLine - 8);
    }
  });

  it('moves a line put again to the newest place, and forgets deleted and oversized lines', () => {
    const cache = new ContentCache(100);
    cache.put(1, { form: RecordForm.recordLine, text: 'a'.repeat(40) });
    cache.put(2, { form: RecordForm.stepViewLine, text: 'b'.repeat(40) });
    cache.put(1, { form: RecordForm.stepViewLine, text: 'c'.repeat(40) });
    expect(cache.get(1)).toEqual({ form: RecordForm.stepViewLine, text: 'c'.repeat(40) });
    cache.put(3, { form: RecordForm.recordLine, text: 'd'.repeat(40) });
    expect(cache.get(2)).toBeUndefined();
    expect(cache.get(1)?.text).toBe('c'.repeat(40));
    expect(cache.get(3)?.text).toBe('d'.repeat(40));
    cache.put(4, { form: RecordForm.recordLine, text: 'e'.repeat(101) });
    expect(cache.get(4)).toBeUndefined();
    cache.delete(3);
    expect(cache.get(3)).toBeUndefined();
    cache.clear();
    expect(cache.get(1)).toBeUndefined();
  });
});
