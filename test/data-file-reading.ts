import { readFileSync } from 'node:fs';
import { parseDataFile } from '../protocol/chain-verify.js';
import { dataFileContent, type DataFileContent } from '../protocol/data-file-content.js';
import { sha256Hex } from '../node/sha256.js';

/** A data file's content (records with their texts, stubs, tasks) and its stored `count`, whatever its format. */
export function readDataFileContent(path: string): DataFileContent & { count: number } {
  return contentOfText(readFileSync(path, 'utf8'));
}

export function contentOfText(text: string): DataFileContent & { count: number } {
  const doc = parseDataFile(text);
  return { ...dataFileContent(doc, sha256Hex), count: doc.count };
}
