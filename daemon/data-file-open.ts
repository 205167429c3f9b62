import { closeSync, constants, fstatSync, type Stats } from 'node:fs';
import { parseDataFile, verifyDataFile } from '../protocol/chain-verify.js';
import type { DataFileV1, DataFileV2 } from '../protocol/data-file.js';
import { dataFileContent, dataFileV2Lines } from '../protocol/data-file-v2.js';
import type { ChainPoint } from '../protocol/records.js';
import { DurableFileWriter, openRegularFileSync, readRegularFileSync } from '../node/durable-files.js';
import { log } from '../node/log.js';
import { sha256Hex } from '../node/sha256.js';
import type { ChainState } from './chain-state.js';
import { OtherLayout } from '../node/data-file-lines.js';
import { indexDataFile, indexDataFileByTasksIndex } from './data-file-index.js';
import { readTasksSectionIndex } from './tasks-section-index.js';

export interface OpenedDataFile {
  fileId: number;
  machineId: string;
  head: ChainPoint;
  stats: Stats;
  /** Whether it was verified on the way (a whole-document parse); else the caller verifies it. */
  verified: boolean;
}

/** Lines gathered before one write while rewriting a data file. */
const REWRITE_CHUNK_BYTES = 1024 * 1024;

/**
 * Opens the data file into the chain state: a taskhistory/2 file in the daemon's layout is indexed
 * by its lines; any other (taskhistory/1, or re-indented) is parsed whole, verified, rewritten in
 * the layout (atomically, so the old file stays until the new one is durable) and then indexed.
 * Null when there is no data file. Throws ChainBreak when the file is unreadable or does not verify.
 */
export async function openDataFile(state: ChainState, dataFile: string, cacheBytes: number): Promise<OpenedDataFile | null> {
  let opened = openIndexed(state, dataFile, cacheBytes);
  if (opened === null) return null;
  if (!(opened instanceof OtherLayout)) return { ...opened, verified: false };
  const doc = parseDataFile(readRegularFileSync(dataFile).toString('utf8'));
  verifyDataFile(doc, sha256Hex);
  log.info('rewriting the data file in the daemon\'s taskhistory/2 layout', { file: dataFile, format: doc.format, why: opened.message });
  await rewriteInLayout(dataFile, doc);
  state.clear();
  opened = openIndexed(state, dataFile, cacheBytes);
  if (opened === null || opened instanceof OtherLayout) throw new Error(`${dataFile} was rewritten but cannot be indexed: ${opened?.message ?? 'it is gone'}`);
  return { ...opened, verified: true };
}

function openIndexed(state: ChainState, dataFile: string, cacheBytes: number): Omit<OpenedDataFile, 'verified'> | OtherLayout | null {
  let fd: number;
  try {
    fd = openRegularFileSync(dataFile, constants.O_RDONLY);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
  const stats = fstatSync(fd);
  const fileId = state.files.add(fd, dataFile);
  const cacheLines = stats.size <= cacheBytes;
  try {
    // A large file's tasks index spares reading its steps; a small file is read whole anyway, for the cache.
    const tasksIndex = cacheLines ? null : readTasksSectionIndex(dataFile, stats);
    if (tasksIndex) {
      try {
        const indexed = indexDataFileByTasksIndex(state, fd, fileId, tasksIndex);
        log.info('placed the data file\'s steps from its tasks index, without reading them', { file: dataFile, tasks: tasksIndex.tasks.length });
        return { fileId, stats, ...indexed };
      } catch (error) {
        if (!(error instanceof OtherLayout)) throw error;
        log.warn('the data file\'s tasks index does not fit it; reading the whole file instead', { file: dataFile, why: error.message });
        state.clear();
      }
    }
    return { fileId, stats, ...indexDataFile(state, fd, fileId, cacheLines) };
  } catch (error) {
    state.files.close(fileId);
    state.clear();
    if (error instanceof OtherLayout) return error;
    throw error;
  }
}

async function rewriteInLayout(dataFile: string, doc: DataFileV1 | DataFileV2): Promise<void> {
  const out = await DurableFileWriter.create(dataFile);
  try {
    let chunk = '';
    for (const line of dataFileV2Lines(dataFileContent(doc, sha256Hex))) {
      chunk += line;
      if (chunk.length < REWRITE_CHUNK_BYTES) continue;
      await out.write(Buffer.from(chunk, 'utf8'));
      chunk = '';
    }
    await out.write(Buffer.from(chunk, 'utf8'));
  } catch (error) {
    await out.abort();
    throw error;
  }
  closeSync(await out.commit());
}
