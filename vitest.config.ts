import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    setupFiles: ['test/setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Each file spawns real daemons; two at a time keeps 2 cores busy without starving fsync-heavy tests.
    maxWorkers: 2,
  },
});
