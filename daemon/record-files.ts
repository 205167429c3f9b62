import { close, readSync } from 'node:fs';
import { log } from '../node/log.js';

interface OpenFile {
  fd: number;
  path: string;
}

/** File ids are 16 bits in the record index; ids are reused once their file is closed. */
const MAX_FILE_ID = 0xffff;

/**
 * The files records are read from (journal segments and data file generations), by a small id
 * the record index stores. A file stays open until no record points into it, so a record stays
 * readable after its file was replaced or deleted on disk.
 */
export class RecordFiles {
  private readonly files = new Map<number, OpenFile>();
  private nextId = 1;

  /** Registers an open descriptor; the registry closes it. */
  add(fd: number, path: string): number {
    while (this.files.has(this.nextId)) this.nextId = (this.nextId % MAX_FILE_ID) + 1;
    const id = this.nextId;
    this.nextId = (this.nextId % MAX_FILE_ID) + 1;
    this.files.set(id, { fd, path });
    return id;
  }

  path(id: number): string {
    return this.file(id).path;
  }

  fd(id: number): number {
    return this.file(id).fd;
  }

  /** The bytes [offset, offset + length) of file `id`. */
  read(id: number, offset: number, length: number): Buffer {
    const bytes = Buffer.allocUnsafe(length);
    this.readInto(id, offset, length, bytes, 0);
    return bytes;
  }

  /** Reads the bytes [offset, offset + length) of file `id` into `target` at `at`. */
  readInto(id: number, offset: number, length: number, target: Buffer, at: number): void {
    const { fd, path } = this.file(id);
    let done = 0;
    while (done < length) {
      const got = readSync(fd, target, at + done, length - done, offset + done);
      if (got === 0) throw new Error(`${path} ends before byte ${offset + length}: it was shortened by someone else`);
      done += got;
    }
  }

  /**
   * Closes it in the thread pool: the last close of a deleted journal segment frees its blocks,
   * tens of milliseconds for 64 MB on ext4, which on this thread stalled every commit meanwhile.
   */
  close(id: number): void {
    const file = this.files.get(id);
    if (!file) return;
    this.files.delete(id);
    close(file.fd, (error) => {
      if (error) log.warn('could not close a record file', { file: file.path, error: error.code ?? String(error) });
    });
  }

  closeAll(): void {
    for (const id of [...this.files.keys()]) this.close(id);
  }

  private file(id: number): OpenFile {
    const file = this.files.get(id);
    if (!file) throw new Error(`record file ${id} is not open`);
    return file;
  }
}
