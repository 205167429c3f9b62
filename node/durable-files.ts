import { closeSync, constants, fstatSync, fsyncSync, openSync, readFileSync, statSync } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

let tempCounter = 0;

/** `.<name>.<pid>.<n>.tmp`: what writeFileDurably leaves behind when it is killed before its rename. */
const DURABLE_TEMP_PATTERN = /^\..+\.\d+\.\d+\.tmp$/;

export function isDurableWriteTemp(name: string): boolean {
  return DURABLE_TEMP_PATTERN.test(name);
}

/** A data-dir file that is a symbolic link or not a regular file: refused, never followed. */
export class NotARegularFile extends Error {
  constructor(readonly path: string) {
    super(`${path} is a symbolic link or not a regular file; the daemon opens data-dir files only as regular files. Move it away (or replace it by a copy of the file it points to)`);
  }
}

/** Opens `path` without following a symbolic link (O_NOFOLLOW); throws NotARegularFile for a link or a non-file. */
export function openRegularFileSync(path: string, flags: number, mode = 0o600): number {
  let fd: number;
  try {
    fd = openSync(path, flags | constants.O_NOFOLLOW, mode);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ELOOP') throw new NotARegularFile(path);
    throw error;
  }
  if (!fstatSync(fd).isFile()) {
    closeSync(fd);
    throw new NotARegularFile(path);
  }
  return fd;
}

/** The content of a regular file, read without following a symbolic link. */
export function readRegularFileSync(path: string): Buffer {
  const fd = openRegularFileSync(path, constants.O_RDONLY);
  try {
    return readFileSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** A fresh temp name beside `path`, of the shape start-up removes when a writer was killed before its rename. */
export function durableTempPath(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${++tempCounter}.tmp`);
}

/**
 * Replaces `path` atomically and durably: a uniquely named temp file beside it (no two writers
 * collide), fsync, rename over the target, fsync of the directory. The target then holds the old
 * or the new content, never a mix, even after a power loss.
 */
export async function writeFileDurably(path: string, content: string): Promise<void> {
  const temp = durableTempPath(path);
  const handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    await handle.writeFile(content, 'utf8');
    await handle.sync();
  } catch (error) {
    await handle.close();
    await unlink(temp).catch(() => undefined);
    throw error;
  }
  await handle.close();
  try {
    await rename(temp, path);
  } catch (error) {
    await unlink(temp).catch(() => undefined);
    throw error;
  }
  await fsyncDirectory(dirname(path));
}

/** Makes a rename or a new file in `dir` durable: fsync of the directory itself. */
export async function fsyncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** The same on this thread, for the journal, whose appends are synchronous. */
export function fsyncDirectorySync(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * A file's identity (inode, size, mtime), or null when it does not exist: two equal identities
 * mean nobody replaced or wrote the file in between.
 */
export function fileIdentity(path: string): string | null {
  try {
    const { ino, size, mtimeMs } = statSync(path);
    return `${ino}:${size}:${mtimeMs}`;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
}

/**
 * A file written in pieces and put in place atomically and durably, as writeFileDurably does for
 * one string: a temp file beside `path`, fsync, rename over it, fsync of the directory. `commit`
 * hands over the descriptor (read and write), still open, for reading the file afterwards.
 */
export class DurableFileWriter {
  private written = 0;

  private constructor(
    readonly path: string,
    private readonly temp: string,
    private readonly handle: Awaited<ReturnType<typeof open>>,
  ) {}

  static async create(path: string): Promise<DurableFileWriter> {
    const temp = durableTempPath(path);
    const handle = await open(temp, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    return new DurableFileWriter(path, temp, handle);
  }

  /** Bytes written so far: where the next piece starts. */
  get position(): number {
    return this.written;
  }

  async write(bytes: Buffer): Promise<void> {
    let done = 0;
    while (done < bytes.length) done += (await this.handle.write(bytes, done, bytes.length - done, this.written + done)).bytesWritten;
    this.written += bytes.length;
  }

  /** fdatasyncs what is written so far, so that the final sync has little left to write. */
  async syncWritten(): Promise<void> {
    await this.handle.datasync();
  }

  /** Syncs, renames into place, syncs the directory; returns a descriptor of the file, which the caller closes. */
  async commit(): Promise<number> {
    await this.renameIntoPlace(() => this.handle.sync());
    await fsyncDirectory(dirname(this.path));
    // A descriptor of our own: the handle's would be closed when the handle is collected.
    const fd = openSync(`/proc/self/fd/${this.handle.fd}`, constants.O_RDONLY);
    await this.handle.close();
    return fd;
  }

  /**
   * Renames into place without any sync: for a file whose reader checks it whole (a checksum) and
   * can do without it, so that a crash may lose or tear it but never makes it mislead. Its fsyncs
   * would only queue on the disk ahead of the journal's.
   */
  async replace(): Promise<void> {
    await this.renameIntoPlace(() => this.handle.close());
  }

  /** Runs `before` (the sync, or the close), then renames the temp file into place; removes it if either fails. */
  private async renameIntoPlace(before: () => Promise<void>): Promise<void> {
    try {
      await before();
      await rename(this.temp, this.path);
    } catch (error) {
      await this.abort();
      throw error;
    }
  }

  /** Closes and removes the temp file (after a failed write). */
  async abort(): Promise<void> {
    await this.handle.close().catch(() => undefined);
    await unlink(this.temp).catch(() => undefined);
  }
}
