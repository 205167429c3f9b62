import { constants, fdatasync, fdatasyncSync, fstatSync, ftruncateSync, lstatSync, readdirSync, unlinkSync, writeSync, type BigIntStats } from 'node:fs';
import { join } from 'node:path';
import { journalSegmentName, sortedJournalSegments } from '../protocol/data-file.js';
import type { ChainRecord } from '../protocol/records.js';
import { fsyncDirectorySync, openRegularFileSync } from '../node/durable-files.js';
import { scanJournalSegments } from '../node/journal-files.js';
import type { JournalAppender, JournalPlace } from './group-commit.js';
import type { RecordFiles } from './record-files.js';

/** What start-up found in the journal segments. */
export interface JournalContents {
  /** Bytes of a torn, never-acknowledged final write that were cut off. */
  droppedTailBytes: number;
}

/** A journal record met at start-up, and where its line is. */
export type JournalRecordHandler = (record: ChainRecord, fileId: number, offset: number, length: number) => void;

/** A segment someone else deleted, replaced, wrote to, or planted beside ours. */
export interface SegmentDamage {
  name: string;
  path: string;
  firstSeq: number;
  problem: 'deleted' | 'replaced' | 'changed' | 'planted';
}

interface Segment {
  name: string;
  firstSeq: number;
  /** Its descriptor in the record files, which read records from it until it is deleted. */
  fileId: number;
  /** The identity our own last change left: any other change of inode, size or ctime is someone else's. */
  ino: bigint;
  size: bigint;
  ctimeNs: bigint;
}

interface WrittenLines {
  fd: number;
  fileId: number;
  start: number;
  previousLastSeq: number;
}

/**
 * The append-only journal: JSON lines in segments beside the data file. A record is acknowledged
 * only after `appendNow` returns or `append` resolves, i.e. after the bytes are written and
 * fdatasync'ed. A failed write or sync is cut off again with ftruncate, so the journal never holds
 * a record that was not acknowledged in front of one that was.
 *
 * It also knows what its segments should look like (inode, size, ctime after its own last change;
 * ctime cannot be set back by a user), so that `inspectSegments` finds foreign deletions and edits.
 */
export class Journal implements JournalAppender {
  private fd: number | null = null;
  /** Where the next line goes: the end of the active segment's lines. */
  private offset = 0;
  /** The active segment holds written bytes (lines, then zeros) up to here. */
  private preallocatedEnd = 0;
  private rotateRequested = false;
  /** Seq of the newest record written to the active segment (synced or not). */
  private activeLastSeq = 0;
  private segments: Segment[] = [];
  /** Someone else changed the active segment between two of our writes (seen before our next one). */
  private activeTouched = false;
  /** Bytes appended since the last checkpoint covered the journal. */
  bytesSinceCheckpoint = 0;
  /** Segments given up after damage: their descriptors close once a checkpoint covers what they held. */
  private abandonedFileIds: number[] = [];

  constructor(
    private readonly dir: string,
    private readonly files: RecordFiles,
  ) {}

  /**
   * Streams every segment (never following a symbolic link) to `onRecord`, oldest first, cutting a
   * torn final write and the preallocated space off the newest one. Every segment stays open for
   * reading its records. Throws ChainBreak for damage, NotARegularFile for a link.
   */
  load(onRecord: JournalRecordHandler): JournalContents {
    const fileIds = new Map<string, number>();
    const fileIdOf = (path: string) => {
      let id = fileIds.get(path);
      if (id === undefined) fileIds.set(path, (id = this.files.add(openRegularFileSync(path, constants.O_RDWR), path)));
      return id;
    };
    const found = scanJournalSegments(this.dir, (record, segment, offset, length) => {
      this.activeLastSeq = record.seq;
      onRecord(record, fileIdOf(segment.path), offset, length);
    });
    let droppedTailBytes = 0;
    const last = found.at(-1);
    if (last) {
      // Preallocated zeros go too (the next append writes them again), and a torn write with them.
      if (last.parsed.tornTail) droppedTailBytes = last.nonZeroEnd - last.parsed.validBytes;
      this.fd = this.files.fd(fileIdOf(last.path));
      if (last.size > last.parsed.validBytes) ftruncateSync(this.fd, last.parsed.validBytes);
      this.offset = this.preallocatedEnd = this.bytesSinceCheckpoint = last.parsed.validBytes;
    }
    this.segments = found.map(({ name, path, firstSeq }) => ({ name, firstSeq, fileId: fileIdOf(path), ...identityOf(lstatSync(path, { bigint: true })) }));
    return { droppedTailBytes };
  }

  /** The next append starts a new segment, so that older ones can be deleted after a checkpoint. */
  requestRotation(): void {
    this.rotateRequested = true;
  }

  /**
   * Writes the lines of records firstSeq..lastSeq and fdatasyncs them on this thread: for when no
   * other call is on its way, since a round trip through libuv's thread pool (0.3 ms here) costs
   * as much as the sync. Throws when the write or the sync fails; the journal is then as it was.
   */
  appendNow(text: string, firstSeq: number, lastSeq: number): JournalPlace {
    const written = this.write(text, firstSeq, lastSeq);
    try {
      fdatasyncSync(written.fd);
    } catch (error) {
      this.undo(written);
      throw error;
    }
    return { fileId: written.fileId, offset: written.start };
  }

  /**
   * The same with the fdatasync in the thread pool, so that the caller can prepare the next group
   * meanwhile. Nothing may be appended before the promise settles.
   */
  append(text: string, firstSeq: number, lastSeq: number): Promise<JournalPlace> {
    const written = this.write(text, firstSeq, lastSeq);
    return new Promise((resolve, reject) => {
      fdatasync(written.fd, (error) => {
        if (!error) return resolve({ fileId: written.fileId, offset: written.start });
        this.undo(written);
        reject(error);
      });
    });
  }

  /**
   * Writes the lines after the last ones (page cache, microseconds) and counts them as written at
   * once, so that a checkpoint meanwhile never deletes a segment with records still syncing.
   * Throws with the journal as it was.
   */
  private write(text: string, firstSeq: number, lastSeq: number): WrittenLines {
    if (this.fd === null || this.rotateRequested) this.openSegment(firstSeq);
    const fd = this.fd as number;
    this.noticeForeignChange(fd);
    const start = this.offset;
    const bytes = Buffer.from(text, 'utf8');
    const end = start + bytes.length;
    try {
      writeFully(fd, bytes, start);
      if (end > this.preallocatedEnd) this.preallocate(fd, end);
    } catch (error) {
      this.cutBackTo(fd, start);
      throw error;
    }
    this.noteOwnChange(fd);
    const written = { fd, fileId: (this.active as Segment).fileId, start, previousLastSeq: this.activeLastSeq };
    this.offset = end;
    this.activeLastSeq = lastSeq;
    this.bytesSinceCheckpoint += bytes.length;
    return written;
  }

  /** After a failed sync its pages may be lost: its lines are cut off again (none was acknowledged). */
  private undo(written: WrittenLines): void {
    this.cutBackTo(written.fd, written.start);
    if (this.fd !== written.fd) return;
    this.offset = written.start;
    this.activeLastSeq = written.previousLastSeq;
  }

  /**
   * Writes zeros from `from` on, synced with the lines before them: later appends then overwrite
   * allocated blocks, and their fdatasync (measured 0.30 ms against 0.47 ms for a growing file)
   * has no size to commit. Without space for them the journal simply grows as it goes.
   */
  private preallocate(fd: number, from: number): void {
    try {
      writeFully(fd, ZEROS, from);
      this.preallocatedEnd = from + ZEROS.length;
    } catch {
      this.cutBackTo(fd, from);
    }
  }

  private cutBackTo(fd: number, offset: number): void {
    try {
      ftruncateSync(fd, offset);
    } catch {
      // Shrinking needs no space; if even this fails the next load cuts the torn tail.
    }
    if (this.fd === fd) {
      this.preallocatedEnd = offset;
      this.noteOwnChange(fd);
    }
  }

  private openSegment(firstSeq: number): void {
    const name = journalSegmentName(firstSeq);
    // O_EXCL: a file planted under the next name is refused, never appended to.
    const fd = openRegularFileSync(join(this.dir, name), constants.O_RDWR | constants.O_CREAT | constants.O_EXCL);
    fsyncDirectorySync(this.dir);
    // The previous segment's descriptor stays open in the record files: its records are read from it.
    this.fd = fd;
    this.offset = this.preallocatedEnd = 0;
    this.rotateRequested = false;
    this.activeTouched = false;
    this.segments.push({ name, firstSeq, fileId: this.files.add(fd, join(this.dir, name)), ...identityOf(fstatSync(fd, { bigint: true })) });
  }

  private get active(): Segment | undefined {
    return this.fd === null ? undefined : this.segments.at(-1);
  }

  private noteOwnChange(fd: number): void {
    const active = this.active;
    if (active && this.fd === fd) Object.assign(active, identityOf(fstatSync(fd, { bigint: true })));
  }

  private noticeForeignChange(fd: number): void {
    const active = this.active;
    if (active && !sameIdentity(active, fstatSync(fd, { bigint: true }))) this.activeTouched = true;
  }

  /**
   * The segments someone else deleted, replaced or changed since our own last change, and
   * segment files we did not write. Cheap (a stat per segment and one directory listing).
   */
  inspectSegments(): SegmentDamage[] {
    const damages: SegmentDamage[] = [];
    const active = this.active;
    for (const segment of this.segments) {
      const path = join(this.dir, segment.name);
      let problem: SegmentDamage['problem'] | null = null;
      try {
        const stats = lstatSync(path, { bigint: true });
        if (!stats.isFile() || stats.ino !== segment.ino) problem = 'replaced';
        else if (!sameIdentity(segment, stats) || (segment === active && this.activeTouched)) problem = 'changed';
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
        problem = 'deleted';
      }
      if (problem) damages.push({ name: segment.name, path, firstSeq: segment.firstSeq, problem });
    }
    const known = new Set(this.segments.map((segment) => segment.name));
    for (const name of sortedJournalSegments(readdirSync(this.dir))) {
      if (!known.has(name)) damages.push({ name, path: join(this.dir, name), firstSeq: Number(name.split('.')[2]), problem: 'planted' });
    }
    return damages;
  }

  /**
   * Stops relying on damaged segments (the caller has moved them aside, or they are gone): the
   * next append starts a new segment, and a checkpoint from memory covers what they held.
   */
  abandon(damages: SegmentDamage[]): void {
    const names = new Set(damages.map((damage) => damage.name));
    const active = this.active;
    if (active && names.has(active.name)) {
      this.fd = null;
      this.activeTouched = false;
    }
    for (const segment of this.segments) if (names.has(segment.name)) this.abandonedFileIds.push(segment.fileId);
    this.segments = this.segments.filter((segment) => !names.has(segment.name));
    this.rotateRequested = true;
  }

  /** Deletes the segments that hold only records at or below `seq` (covered by a checkpoint). */
  deleteCoveredSegments(seq: number): void {
    while (this.segments.length > 1 && this.segments[1].firstSeq - 1 <= seq) {
      const [covered] = this.segments.splice(0, 1);
      unlinkIfPresent(join(this.dir, covered.name));
      this.files.close(covered.fileId);
    }
    const only = this.segments[0];
    if (this.segments.length === 1 && this.activeLastSeq <= seq) {
      // The active segment is wholly covered too: start afresh on the next append.
      this.fd = null;
      unlinkIfPresent(join(this.dir, only.name));
      this.files.close(only.fileId);
      this.segments = [];
    }
    for (const fileId of this.abandonedFileIds.splice(0)) this.files.close(fileId);
    this.bytesSinceCheckpoint = this.segments.length ? this.offset : 0;
  }

  /** Stops appending; the record files (which own the descriptors) close them. */
  close(): void {
    this.fd = null;
  }
}

/** Space the active segment keeps written ahead of its lines. */
const ZEROS = Buffer.alloc(256 << 10);

function identityOf(stats: BigIntStats): Pick<Segment, 'ino' | 'size' | 'ctimeNs'> {
  return { ino: stats.ino, size: stats.size, ctimeNs: stats.ctimeNs };
}

function sameIdentity(segment: Segment, stats: BigIntStats): boolean {
  return stats.ino === segment.ino && stats.size === segment.size && stats.ctimeNs === segment.ctimeNs;
}

function unlinkIfPresent(path: string): void {
  try {
    unlinkSync(path);
  } catch (error) {
    // Someone else deleted it first: the tamper watch reports that, the checkpoint covers it.
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}

function writeFully(fd: number, bytes: Buffer, position: number): void {
  let written = 0;
  while (written < bytes.length) written += writeSync(fd, bytes, written, bytes.length - written, position + written);
}
