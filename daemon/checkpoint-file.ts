import { lstatSync, type Stats } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { Adapter } from 'lowdb';
import { sha256Hex } from '../node/sha256.js';
import { ChainBreak, parseDataFile } from '../protocol/chain-verify.js';
import { DATA_FILE_FORMAT_V1, type DataFile } from '../protocol/data-file.js';
import { NotARegularFile, readRegularFileSync, writeFileDurably } from '../node/durable-files.js';

/** How many of our own recent writes to remember, to tell them from foreign edits. */
const REMEMBERED_WRITES = 8;

/**
 * lowdb adapter for task_history.json that makes every write atomic and durable: a uniquely named
 * temp file (so no two writers collide), fsync, rename over the target, fsync of the directory.
 * Reads (never following a symbolic link) reject an empty, truncated or wrongly shaped file with a ChainBreak('unreadable file').
 * It remembers the identity and SHA-256 of what it wrote, so the watcher can tell its own writes from others'.
 */
export class DurableJsonFile implements Adapter<DataFile> {
  private readonly ownDigests: string[] = [];
  /** Identity of the file as we last wrote or read it: a cheap first check before reading it back. */
  private lastWritten: { ino: number; size: number; mtimeMs: number } | null = null;

  constructor(readonly path: string) {}

  async read(): Promise<DataFile | null> {
    let text: string;
    try {
      text = readRegularFileSync(this.path).toString('utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
      if (error instanceof NotARegularFile) throw new ChainBreak('unreadable file', null, error.message);
      throw error;
    }
    // Identity by inode, size and mtime: hashing a large file here would slow every start.
    const { ino, size, mtimeMs } = lstatSync(this.path);
    this.lastWritten = { ino, size, mtimeMs };
    const doc = parseDataFile(text);
    if (doc.format !== DATA_FILE_FORMAT_V1) throw new ChainBreak('unreadable file', null, `${this.path} is ${doc.format}, which this engine does not read`);
    return doc;
  }

  async write(data: DataFile): Promise<void> {
    const text = JSON.stringify(data);
    // Known before it lands, so the watcher's event for the rename already finds it ours.
    this.remember(sha256Hex(text));
    await writeFileDurably(this.path, text);
    const { ino, size, mtimeMs } = await stat(this.path);
    this.lastWritten = { ino, size, mtimeMs };
  }

  /** True when the file is still exactly the inode, size and mtime we last wrote. */
  isOwnStat(current: Stats): boolean {
    const last = this.lastWritten;
    return !!last && current.ino === last.ino && current.size === last.size && current.mtimeMs === last.mtimeMs;
  }

  /** Whether this content is one the daemon itself wrote recently. */
  isOwn(text: string): boolean {
    return this.ownDigests.includes(sha256Hex(text));
  }

  private remember(digest: string): void {
    this.ownDigests.push(digest);
    if (this.ownDigests.length > REMEMBERED_WRITES) this.ownDigests.shift();
  }
}
