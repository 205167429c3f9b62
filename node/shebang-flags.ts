import { readFileSync } from 'node:fs';

/**
 * The Node flags of a script's `#!/usr/bin/env -S node ...` line (the commands' heap sizes): what
 * running it as `node script` (a unit's ExecStart, the bench) must pass itself to run it as installed.
 */
export function shebangNodeFlags(script: string): string[] {
  const firstLine = readFileSync(script, 'utf8').slice(0, 512).split('\n', 1)[0];
  return /^#!\/usr\/bin\/env -S node (.+)$/.exec(firstLine)?.[1].trim().split(/\s+/) ?? [];
}
