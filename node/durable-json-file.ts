import type { Adapter } from 'lowdb';
import { readRegularFileSync, writeFileDurably } from './durable-files.js';

/**
 * lowdb adapter for a small JSON document the daemon rewrites whole (the cloud cursor, the durable
 * head): read without following a symbolic link, written atomically and durably (temp file, fsync,
 * rename, directory fsync). `parse` turns the text into the document, or throws on a bad one.
 */
export class DurableJsonFile<T> implements Adapter<T> {
  constructor(
    readonly path: string,
    private readonly parse: (text: string) => T,
  ) {}

  /** The document, or null when there is no file; synchronous for reads at start-up. */
  readSync(): T | null {
    let text: string;
    try {
      text = readRegularFileSync(this.path).toString('utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw error;
    }
    return this.parse(text);
  }

  async read(): Promise<T | null> {
    return this.readSync();
  }

  write(data: T): Promise<void> {
    return writeFileDurably(this.path, `${JSON.stringify(data)}\n`);
  }
}
