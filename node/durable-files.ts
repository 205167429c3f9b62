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

/**
 * Replaces `path` atomically and durably: a uniquely named temp file beside it (no two writers
 * collide), fsync, rename over the target, fsync of the directory. The target then holds the old
 * or the new content, never a mix, even after a power loss.
 */
export async function writeFileDurably(path: string, content: string): Promise<void> {
  const temp = join(dirname(path), `.${basename(path)}.${process.pid}.${++tempCounter}.tmp`);
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
