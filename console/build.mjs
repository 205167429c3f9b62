// Builds the fleet console: console/main.ts and style.css bundled by esbuild into
// dist/console/assets/ under content-hashed names, and dist/console/index.html naming them.
// Run by `npm run build` after `tsc -p console/tsconfig.json` has type-checked the code.
import { build } from 'esbuild';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const source = dirname(fileURLToPath(import.meta.url));
const out = join(source, '..', 'dist', 'console');

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
const result = await build({
  entryPoints: [join(source, 'main.ts'), join(source, 'style.css')],
  outdir: join(out, 'assets'),
  entryNames: '[name]-[hash]',
  bundle: true,
  format: 'esm',
  target: ['chrome120', 'firefox120'],
  minify: true,
  sourcemap: 'linked',
  metafile: true,
  logLevel: 'warning',
});

const outputs = Object.entries(result.metafile.outputs);
const outputOf = (entry) => {
  const found = outputs.find(([, output]) => output.entryPoint?.endsWith(entry));
  if (!found) throw new Error(`esbuild wrote no output for console/${entry}`);
  return basename(found[0]);
};
const html = (await readFile(join(source, 'index.html'), 'utf8'))
  .replace('{{script}}', outputOf('main.ts'))
  .replace('{{style}}', outputOf('style.css'));
await writeFile(join(out, 'index.html'), html);
