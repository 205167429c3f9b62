import { closeSync, constants, fstatSync, fdatasync, fsyncSync, ftruncateSync, openSync, readdirSync, readFileSync, truncateSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { journalSegmentName, parseJournal, sortedJournalSegments } from '../protocol/data-file.js';
import type { ChainRecord } from '../protocol/records.js';

/** What start-up found in the journal segments. */
export interface JournalContents {
  records: ChainRecord[];
  /** Segments oldest first, with the seq their name says they start at. */
  segments: { name: string; firstSeq: number }[];
  /** Bytes of a torn, never-acknowledged final write that were cut off. */
  droppedTailBytes: number;
}

export class JournalDamaged extends Error {}

/**
 * The append-only journal: JSON lines in segments beside the data file. A record is acknowledged
 * only after `append` resolves, i.e. after the bytes are written and fdatasync'ed. Writes go
 * through `writeSync` at a tracked offset (page cache, microseconds) so that each commit costs
 * one thread-pool hop, the fdatasync. A failed write or sync is cut off again with ftruncate, so
 * the journal never holds a record that was not acknowledged in front of one that was.
 */
export class Journal {
  private fd: number | null = null;
  private offset = 0;
  private rotateRequested = false;
  /** Seq of the newest record written to the active segment (synced or not). */
  private activeLastSeq = 0;
  private segments: { name: string; firstSeq: number }[] = [];
  /** Bytes appended since the last checkpoint covered the journal. */
  bytesSinceCheckpoint = 0;

  constructor(private readonly dir: string) {}

  /** Reads every segment, cutting a torn final line off the newest one. Throws JournalDamaged. */
  load(): JournalContents {
    const names = sortedJournalSegments(readdirSync(this.dir));
    const records: ChainRecord[] = [];
    let droppedTailBytes = 0;
    names.forEach((name, index) => {
      const path = join(this.dir, name);
      const bytes = readFileSync(path);
      const text = bytes.toString('utf8');
      const parsed = parseJournal(text);
      const isLast = index === names.length - 1;
      if (parsed.damagedLine !== undefined || (parsed.tornTail && !isLast)) {
        throw new JournalDamaged(`journal segment ${path} is damaged at line ${parsed.damagedLine ?? parsed.records.length + 1}`);
      }
      if (parsed.tornTail) {
        droppedTailBytes = bytes.length - parsed.validBytes;
        truncateSync(path, parsed.validBytes);
      }
      records.push(...parsed.records);
      if (parsed.records.length) this.activeLastSeq = parsed.records[parsed.records.length - 1].seq;
      this.segments.push({ name, firstSeq: Number(name.split('.')[2]) });
    });
    const last = this.segments.at(-1);
    if (last) {
      this.fd = openSync(join(this.dir, last.name), 'r+');
      this.offset = fstatSync(this.fd).size;
      this.bytesSinceCheckpoint = this.offset;
    }
    return { records, segments: [...this.segments], droppedTailBytes };
  }

  /** The next append starts a new segment, so that older ones can be deleted after a checkpoint. */
  requestRotation(): void {
    this.rotateRequested = true;
  }

  /**
   * Writes the lines of records firstSeq..lastSeq and resolves once they are durable.
   * Throws synchronously when the write itself fails; the journal is then as it was.
   */
  append(text: string, firstSeq: number, lastSeq: number): Promise<void> {
    if (this.fd === null || this.rotateRequested) this.openSegment(firstSeq);
    const fd = this.fd as number;
    const start = this.offset;
    const bytes = Buffer.from(text, 'utf8');
    try {
      let written = 0;
      while (written < bytes.length) written += writeSync(fd, bytes, written, bytes.length - written, start + written);
    } catch (error) {
      this.cutBackTo(fd, start);
      throw error;
    }
    const previousLastSeq = this.activeLastSeq;
    this.offset = start + bytes.length;
    this.activeLastSeq = lastSeq;
    this.bytesSinceCheckpoint += bytes.length;
    return new Promise((resolve, reject) => {
      fdatasync(fd, (error) => {
        if (!error) return resolve();
        // Pages of a failed sync may be lost: drop them and everything after (none is acknowledged).
        this.cutBackTo(fd, start);
        if (this.fd === fd) this.activeLastSeq = previousLastSeq;
        reject(error);
      });
    });
  }

  private cutBackTo(fd: number, offset: number): void {
    try {
      ftruncateSync(fd, offset);
    } catch {
      // Shrinking needs no space; if even this fails the next load cuts the torn tail.
    }
    if (this.fd === fd) this.offset = offset;
  }

  private openSegment(firstSeq: number): void {
    const name = journalSegmentName(firstSeq);
    const fd = openSync(join(this.dir, name), constants.O_RDWR | constants.O_CREAT, 0o600);
    syncDirectory(this.dir);
    if (this.fd !== null) closeSync(this.fd);
    this.fd = fd;
    this.offset = fstatSync(fd).size;
    this.rotateRequested = false;
    this.segments.push({ name, firstSeq });
  }

  /** Deletes the segments that hold only records at or below `seq` (covered by a checkpoint). */
  deleteCoveredSegments(seq: number): void {
    while (this.segments.length > 1 && this.segments[1].firstSeq - 1 <= seq) {
      const [covered] = this.segments.splice(0, 1);
      unlinkSync(join(this.dir, covered.name));
    }
    const only = this.segments[0];
    if (this.segments.length === 1 && this.fd !== null && this.activeLastSeq <= seq) {
      // The active segment is wholly covered too: start afresh on the next append.
      closeSync(this.fd);
      this.fd = null;
      unlinkSync(join(this.dir, only.name));
      this.segments = [];
    }
    this.bytesSinceCheckpoint = this.segments.length ? this.offset : 0;
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}

function syncDirectory(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
