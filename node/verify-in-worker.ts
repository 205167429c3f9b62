import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import type { VerifyReport } from '../protocol/chain-verify.js';
import { verifyDataFileOnDisk } from './verify-files.js';

/**
 * verifyDataFileOnDisk on a worker thread: reading and hashing a whole log takes seconds on a
 * large one, and the daemon's event loop must keep serving (and pinging the watchdog) meanwhile.
 * One worker, started on first use and kept (unref'ed) for the next; calls take turns.
 */
let worker: Worker | null = null;
let turn: Promise<unknown> = Promise.resolve();

export function verifyDataFileInWorker(dataFile: string): Promise<VerifyReport> {
  const run = turn.then(() => askWorker(dataFile));
  turn = run.catch(() => undefined);
  return run;
}

function askWorker(dataFile: string): Promise<VerifyReport> {
  if (!worker) {
    worker = new Worker(new URL(import.meta.url), { workerData: { role: 'verifier' } });
    worker.unref(); // an idle verifier never keeps the daemon alive
  }
  const current = worker;
  return new Promise((resolve, reject) => {
    const settle = (outcome: () => void) => {
      current.off('message', onMessage).off('error', onError).off('exit', onExit);
      outcome();
    };
    const onMessage = (report: VerifyReport) => settle(() => resolve(report));
    // A worker that failed is replaced on the next call.
    const onError = (error: Error) => settle(() => ((worker = null), reject(error)));
    const onExit = (code: number) => settle(() => ((worker = null), reject(new Error(`the verify worker exited with code ${code} before reporting`))));
    current.on('message', onMessage).on('error', onError).on('exit', onExit);
    current.postMessage(dataFile);
  });
}

if (!isMainThread && parentPort && (workerData as { role?: unknown } | null)?.role === 'verifier') {
  const port = parentPort;
  port.on('message', (dataFile: string) => port.postMessage(verifyDataFileOnDisk(dataFile)));
}
