import { readFileSync } from 'node:fs';
import { parseDataFile } from '../protocol/chain-verify.js';
import { dataFileContent, type DataFileContent } from '../protocol/data-file-content.js';
import { sha256Hex } from '../node/sha256.js';

/** A data file's content (records with their texts, stubs, tasks) whatever its format, as the tests compare it. */
export function readDataFileContent(path: string): DataFileContent {
  return contentOfText(readFileSync(path, 'utf8'));
}

export function contentOfText(text: string): DataFileContent {
  return dataFileContent(parseDataFile(text), sha256Hex);
}
