import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import type { VerifyReport } from '../protocol/chain-verify.js';
import { verifyDataFileOnDisk } from './verify-files.js';

/**
 * verifyDataFileOnDisk on a worker thread: reading and hashing a whole log takes seconds on a
 * large one, and the daemon's event loop must keep serving (and pinging the watchdog) meanwhile.
 */
export function verifyDataFileInWorker(dataFile: string): Promise<VerifyReport> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL(import.meta.url), { workerData: { verifyDataFile: dataFile } });
    worker.once('message', (report: VerifyReport) => resolve(report));
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`the verify worker exited with code ${code} before reporting`)));
  });
}

if (!isMainThread && parentPort && typeof (workerData as { verifyDataFile?: unknown })?.verifyDataFile === 'string') {
  parentPort.postMessage(verifyDataFileOnDisk((workerData as { verifyDataFile: string }).verifyDataFile));
}
