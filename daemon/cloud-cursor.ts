import { join } from 'node:path';
import { ChainPointFile } from './chain-point-file.js';

export const CLOUD_CURSOR_FILE = 'cloud_cursor.json';

/**
 * The newest {seq, hash} the cloud acknowledged, kept in `<data dir>/cloud_cursor.json` so that
 * trimming holds unpushed records from the moment the daemon starts. On reconnect the cloud's
 * `head` is authoritative, so writes are coalesced (newest wins) and a lagging file is only
 * conservative: it holds more than needed, never less.
 */
export class CloudCursor extends ChainPointFile {
  constructor(dataDir: string) {
    super(join(dataDir, CLOUD_CURSOR_FILE), 'cloud cursor');
  }
}
