import { readdirSync, readFileSync, statSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * The architecture, enforced: `protocol/` is the pure contract (no Node module, nothing of ours
 * outside it, so a browser can load it); `node/` is the Node code the daemon and the cloud share;
 * `daemon/`, `client/`, `cloud/` use those two and never each other; `console/` (the browser page)
 * uses only `protocol/`; `bench/` and `test/` use only the public client API and the few internals
 * listed here.
 */
const ROOT = resolve(import.meta.dirname, '..');

const RULES: Record<string, { folders: string[]; files?: string[]; nodeModules: boolean }> = {
  protocol: { folders: ['protocol'], nodeModules: false },
  console: { folders: ['console', 'protocol'], nodeModules: false },
  node: { folders: ['node', 'protocol'], nodeModules: true },
  daemon: { folders: ['daemon', 'node', 'protocol'], nodeModules: true },
  client: { folders: ['client', 'node', 'protocol'], nodeModules: true },
  cloud: { folders: ['cloud', 'node', 'protocol'], nodeModules: true },
  bench: { folders: ['bench', 'node', 'protocol'], files: ['client/sdk.ts'], nodeModules: true },
  test: {
    folders: ['test', 'node', 'protocol'],
    // The SDK is the public API; the systemd glue, group commit (through a failing journal twin), the
    // content cache's ring, the record index with its hash spill, the seq list and the offset column
    // are unit-tested on their own; the throwaway PostgreSQL is the bench's and the tests'.
    files: ['client/sdk.ts', 'daemon/systemd.ts', 'daemon/group-commit.ts', 'daemon/content-cache.ts', 'daemon/record-index.ts', 'daemon/hash-spill.ts', 'daemon/seq-list.ts', 'daemon/offset-column.ts', 'daemon/tasks-section-index.ts'],
    nodeModules: true,
  },
};

const NODE_BUILTINS = new Set(builtinModules);

interface ImportSite {
  file: string;
  specifier: string;
}

/** Every static and dynamic import and re-export in a TypeScript file. */
export function importsOf(source: string): string[] {
  const specifiers: string[] = [];
  const pattern = /(?:\bimport\s[^'"`;]*?\bfrom\s*|\bexport\s[^'"`;]*?\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(['"])([^'"]+)\1/g;
  for (const match of source.matchAll(pattern)) specifiers.push(match[2]);
  return specifiers;
}

function sourceFiles(dir: string): string[] {
  const found: string[] = [];
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return found;
  }
  for (const name of names) {
    if (name === 'node_modules' || name === 'results') continue;
    const path = join(dir, name);
    if (statSync(path).isDirectory()) found.push(...sourceFiles(path));
    else if (/\.(ts|mts)$/.test(name) && !name.endsWith('.d.ts')) found.push(path);
  }
  return found;
}

/** What is wrong with one import of a file in `layer`, or null. */
export function layeringProblem(layer: string, fromFile: string, specifier: string): string | null {
  const rule = RULES[layer];
  if (specifier.startsWith('node:') || NODE_BUILTINS.has(specifier.split('/')[0])) {
    return rule.nodeModules ? null : `${layer}/ may not import the Node module "${specifier}"`;
  }
  if (!specifier.startsWith('.')) return null; // a package from node_modules
  const target = relative(ROOT, resolve(dirname(fromFile), specifier)).replace(/\.js$/, '.ts');
  const folder = target.split('/')[0];
  if (rule.folders.includes(folder) || rule.files?.includes(target)) return null;
  return `${layer}/ may not import ${target}`;
}

function violations(): string[] {
  const problems: string[] = [];
  for (const layer of Object.keys(RULES)) {
    // This file's own examples are not imports.
    for (const file of sourceFiles(join(ROOT, layer)).filter((path) => path !== import.meta.filename)) {
      const sites: ImportSite[] = importsOf(readFileSync(file, 'utf8')).map((specifier) => ({ file, specifier }));
      for (const { specifier } of sites) {
        const problem = layeringProblem(layer, file, specifier);
        if (problem) problems.push(`${relative(ROOT, file)}: ${problem}`);
      }
    }
  }
  return problems;
}

describe('layering', () => {
  it('every import in the tree follows the rules', () => {
    expect(violations()).toEqual([]);
  });

  it('finds every kind of import statement', () => {
    const source = [
      "import { a } from './a.js';",
      "import type { B } from '../protocol/b.js';",
      "import './side-effect.js';",
      "export { c } from '../daemon/c.js';",
      "const d = await import('node:fs');",
      'import {\n  e,\n  f,\n} from "../cloud/e.js";',
    ].join('\n');
    expect(importsOf(source)).toEqual(['./a.js', '../protocol/b.js', './side-effect.js', '../daemon/c.js', 'node:fs', '../cloud/e.js']);
  });

  it('refuses each forbidden kind of import', () => {
    const inFolder = (folder: string) => join(ROOT, folder, 'x.ts');
    expect(layeringProblem('protocol', inFolder('protocol'), 'node:crypto')).toMatch(/Node module/);
    expect(layeringProblem('protocol', inFolder('protocol'), 'fs')).toMatch(/Node module/);
    expect(layeringProblem('protocol', inFolder('protocol'), '../node/log.js')).toMatch(/may not import node\/log\.ts/);
    expect(layeringProblem('console', inFolder('console'), '../cloud/server.js')).toMatch(/may not import/);
    expect(layeringProblem('daemon', inFolder('daemon'), '../client/sdk.js')).toMatch(/may not import client\/sdk\.ts/);
    expect(layeringProblem('client', inFolder('client'), '../daemon/store.js')).toMatch(/may not import/);
    expect(layeringProblem('cloud', inFolder('cloud'), '../daemon/journal.js')).toMatch(/may not import/);
    expect(layeringProblem('node', inFolder('node'), '../daemon/settings.js')).toMatch(/may not import/);
    expect(layeringProblem('test', inFolder('test'), '../bench/workload.js')).toMatch(/may not import/);
    expect(layeringProblem('test', inFolder('test'), '../daemon/store.js')).toMatch(/may not import/);
    expect(layeringProblem('bench', inFolder('bench'), '../daemon/store.js')).toMatch(/may not import/);
    // and allows what the rules allow
    expect(layeringProblem('protocol', inFolder('protocol'), 'zod')).toBeNull();
    expect(layeringProblem('daemon', inFolder('daemon'), '../node/log.js')).toBeNull();
    expect(layeringProblem('test', inFolder('test'), '../client/sdk.js')).toBeNull();
  });
});
