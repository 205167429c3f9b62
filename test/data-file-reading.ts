import { readFileSync } from 'node:fs';
import { parseDataFile } from '../protocol/chain-verify.js';
import { DATA_FILE_FORMAT_V1, type DataFileV1 } from '../protocol/data-file.js';
import { dataFileContent, type DataFileContent } from '../protocol/data-file-v2.js';
import { sha256Hex } from '../node/sha256.js';

/** A data file's content (records with their texts, stubs, tasks) and its stored `count`, whatever its format. */
export function readDataFileContent(path: string): DataFileContent & { count: number } {
  return contentOfText(readFileSync(path, 'utf8'));
}

export function contentOfText(text: string): DataFileContent & { count: number } {
  const doc = parseDataFile(text);
  return { ...dataFileContent(doc, sha256Hex), count: doc.count };
}

/**
 * The same history as a taskhistory/1 document (the previous release's format, every output in the
 * records and in the tasks), for the tests that prove the v1 reading paths on a daemon's real history.
 */
export function version1TextOf(path: string): string {
  const { machine_id, max_tasks, head, anchor, stubs, records, tasks } = readDataFileContent(path);
  const doc: DataFileV1 = { tasks, count: tasks.length, max_tasks, format: DATA_FILE_FORMAT_V1, machine_id, head, chain: { anchor, stubs, records } };
  return JSON.stringify(doc);
}
