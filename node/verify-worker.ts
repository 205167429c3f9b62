import { parentPort } from 'node:worker_threads';
import { SharedSeqHashes } from './shared-seq-hashes.js';
import { verifyDataFileOnDisk } from './verify-files.js';
import type { VerifyRequest } from './verify-in-worker.js';

/** The worker thread of verifyDataFileInWorker: verifies each data file it is sent and posts the report. */
const port = parentPort;
if (!port) throw new Error('verify-worker.js runs only as the worker thread of verifyDataFileInWorker');
port.on('message', ({ dataFile, hashes }: VerifyRequest) =>
  port.postMessage(verifyDataFileOnDisk(dataFile, hashes && ((firstSeq) => new SharedSeqHashes(hashes, firstSeq)))),
);
