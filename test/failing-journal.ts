import type { JournalAppender, JournalPlace } from '../daemon/group-commit.js';

/**
 * A journal twin whose every write fails, as a full disk does (ENOSPC by default), on both the
 * synchronous and the thread-pool path. It remembers what it was asked to write, so a test can
 * see which groups reached the journal.
 */
export class FailingJournal implements JournalAppender {
  readonly attempts: { firstSeq: number; lastSeq: number; lines: number; path: 'now' | 'pool' }[] = [];

  constructor(private readonly code = 'ENOSPC') {}

  appendNow(text: string, firstSeq: number, lastSeq: number): JournalPlace {
    this.attempts.push({ firstSeq, lastSeq, lines: lineCount(text), path: 'now' });
    throw this.error();
  }

  append(text: string, firstSeq: number, lastSeq: number): Promise<JournalPlace> {
    this.attempts.push({ firstSeq, lastSeq, lines: lineCount(text), path: 'pool' });
    // Settles later, as a real fdatasync in the thread pool does: calls meanwhile stage the next group.
    return new Promise((_resolve, reject) => setTimeout(() => reject(this.error()), 10));
  }

  private error(): NodeJS.ErrnoException {
    return Object.assign(new Error(`${this.code}: no space left on device, write`), { code: this.code, errno: -28, syscall: 'write' });
  }
}

const lineCount = (text: string) => text.split('\n').length - 1;
