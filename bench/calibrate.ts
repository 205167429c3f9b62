import { closeSync, fdatasyncSync, openSync, rmSync, writeSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { nowMs, summarize } from './stats.js';

/**
 * What the machine gives right now, printed beside the results so a slow run can be told from a
 * busy machine: the load average and the latency of one fdatasync'ed 1 KiB append in the scratch dir.
 */
const SYNCS = 200;

export function machineConditions(scratchDir: string): { line: string; busy: boolean } {
  const file = join(scratchDir, 'fdatasync-probe');
  const fd = openSync(file, 'a');
  const chunk = Buffer.alloc(1024, 'x');
  const latencies: number[] = [];
  try {
    for (let i = 0; i < SYNCS; i++) {
      const start = nowMs();
      writeSync(fd, chunk);
      fdatasyncSync(fd);
      latencies.push(nowMs() - start);
    }
  } finally {
    closeSync(fd);
    rmSync(file);
  }
  const sync = summarize(latencies);
  const load = loadavg()[0];
  return {
    line: `load average ${load.toFixed(2)} at start; fdatasync of a 1 KiB append: p50 ${sync.p50.toFixed(2)} ms, p99 ${sync.p99.toFixed(2)} ms`,
    busy: load > availableParallelism() || sync.p50 > 1,
  };
}
