import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The package root: the nearest folder above this module holding package.json. Found rather than
 * spelled as a relative path, since this module runs from several depths: node/ in tests,
 * dist/node/ unbundled, and inside a command's bundle in dist/bin/.
 */
function findPackageRoot(): string {
  const here = fileURLToPath(import.meta.url);
  for (let dir = dirname(here); ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) throw new Error(`no package.json above ${here}: reinstall the taskhistory package`);
  }
}

export const PACKAGE_ROOT = findPackageRoot();

/** The version in the package's package.json, which every command reports. */
export const PACKAGE_VERSION = (JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
