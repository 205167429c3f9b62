import { open } from 'node:fs/promises';

/** Makes a rename or a new file in `dir` durable: fsync of the directory itself. */
export async function fsyncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
