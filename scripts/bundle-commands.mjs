// Bundles each command (and the verify worker it starts) into one file in dist/bin/, run by
// `npm run build` after tsc has emitted dist/. Loading a command's ~200 modules one by one cost a start
// about 150 ms on this project's 2-core machines; one file costs a few. Native code and the
// optional native helpers of ws and pg stay outside: they are loaded at run time, when present.
import { build } from 'esbuild';
import { chmod, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const dist = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist');
const out = join(dist, 'bin');
const commands = { taskhistoryd: 'daemon/main.js', taskhistory: 'client/cli.js', 'taskhistory-cloud': 'cloud/main.js' };

await rm(out, { recursive: true, force: true });
await build({
  entryPoints: {
    ...Object.fromEntries(Object.entries(commands).map(([name, entry]) => [name, join(dist, entry)])),
    // Started by new URL('./verify-worker.js', import.meta.url) from inside the daemon's bundle.
    'verify-worker': join(dist, 'node/verify-worker.js'),
  },
  outdir: out,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  external: ['bufferutil', 'utf-8-validate', 'pg-native'],
  // The CommonJS packages bundled in call require(); an ES module has none of its own.
  banner: { js: "import { createRequire as createRequireOfBundle } from 'node:module'; const require = createRequireOfBundle(import.meta.url);" },
  logLevel: 'warning',
});
await Promise.all(Object.keys(commands).map((name) => chmod(join(out, `${name}.js`), 0o755)));
