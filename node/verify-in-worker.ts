import { Worker } from 'node:worker_threads';
import type { VerifyReport } from '../protocol/chain-verify.js';
import type { SharedHashes } from './shared-seq-hashes.js';

/**
 * verifyDataFileOnDisk on a worker thread: reading and hashing a whole log takes seconds on a
 * large one, and the daemon's event loop must keep serving (and pinging the watchdog) meanwhile.
 * Calls take turns; each gets a fresh worker, ended once it reported: a worker kept idle would
 * hold its heap (tens of MB after a large log) for good. It reads the record hashes the daemon
 * already holds (`hashes`) instead of keeping its own copy. Its young generation is the daemon's
 * (`--max-semi-space-size` applies to every isolate of the process and overrides a worker's
 * resourceLimits.maxYoungGenerationSizeMb: 2 MB there left its new space at 8.4 MB), so no limit is set here.
 */
let turn: Promise<unknown> = Promise.resolve();

export interface VerifyRequest {
  dataFile: string;
  hashes?: SharedHashes;
}

export function verifyDataFileInWorker(dataFile: string, hashes?: SharedHashes): Promise<VerifyReport> {
  const run = turn.then(() => askWorker({ dataFile, ...(hashes && { hashes }) }));
  turn = run.catch(() => undefined);
  return run;
}

function askWorker(request: VerifyRequest): Promise<VerifyReport> {
  // Beside this module: dist/node/ unbundled, dist/bin/ in a command's bundle (which bundles it too).
  const worker = new Worker(new URL('./verify-worker.js', import.meta.url));
  worker.unref(); // a verification never keeps the daemon alive
  return new Promise((resolve, reject) => {
    const settle = (outcome: () => void) => {
      worker.off('message', onMessage).off('error', onError).off('exit', onExit);
      outcome();
    };
    const onMessage = (report: VerifyReport) =>
      settle(() => {
        void worker.terminate();
        resolve(report);
      });
    const onError = (error: Error) => settle(() => reject(error));
    const onExit = (code: number) => settle(() => reject(new Error(`the verify worker exited with code ${code} before reporting`)));
    worker.on('message', onMessage).on('error', onError).on('exit', onExit);
    worker.postMessage(request);
  });
}
