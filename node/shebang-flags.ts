import { closeSync, openSync, readSync } from 'node:fs';

/** A `#!` line longer than this holds no flags we write. */
const FIRST_LINE_MAX_BYTES = 512;

/**
 * The Node flags of a script's `#!/usr/bin/env -S node ...` line (the commands' heap sizes): what
 * running it as `node script` (a unit's ExecStart, the bench) must pass itself to run it as installed.
 * Reads only the file's start: a command's bundle is over a megabyte.
 */
export function shebangNodeFlags(script: string): string[] {
  const head = Buffer.alloc(FIRST_LINE_MAX_BYTES);
  const fd = openSync(script, 'r');
  let bytes: number;
  try {
    bytes = readSync(fd, head, 0, head.length, 0);
  } finally {
    closeSync(fd);
  }
  const firstLine = head.toString('utf8', 0, bytes).split('\n', 1)[0];
  return /^#!\/usr\/bin\/env -S node (.+)$/.exec(firstLine)?.[1].trim().split(/\s+/) ?? [];
}
