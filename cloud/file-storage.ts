import { mkdir, open, readdir, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { ChainBreak, ChainWalker } from '../protocol/chain-verify.js';
import { isRecordLike, journalLine } from '../protocol/data-file.js';
import { fsyncDirectory } from '../node/durable-files.js';
import { GENESIS_HASH, type ChainPoint, type ChainRecord } from '../protocol/records.js';
import { log } from '../node/log.js';
import type { CloudStorage } from './storage.js';
import { sha256Hex } from '../node/sha256.js';

/**
 * The default backend: one append-only JSONL file per machine under `<data-dir>/machines/`, each
 * line one record exactly as pushed. Appends are fdatasync'ed before they are acknowledged; the
 * index (where each record's line starts, and the head) lives in memory and is rebuilt, with the
 * chain re-verified, on start.
 */
const MACHINES_DIR = 'machines';
const LOG_SUFFIX = '.jsonl';

interface MachineLog {
  handle: FileHandle;
  /** Byte offset where each record's line starts: starts[i] belongs to seq i + 1. */
  starts: number[];
  size: number;
  head: ChainPoint;
}

/** A machine file that cannot be trusted: the endpoint refuses to start rather than serve or extend it. */
export class StorageLoadError extends Error {}

const EMPTY_HEAD: ChainPoint = { seq: 0, hash: GENESIS_HASH };

// Machine ids are percent-encoded so that no id can name a path outside the directory.
const fileNameOf = (machineId: string) => `${encodeURIComponent(machineId)}${LOG_SUFFIX}`;
const machineIdOf = (fileName: string) => decodeURIComponent(fileName.slice(0, -LOG_SUFFIX.length));

export class FileStorage implements CloudStorage {
  private constructor(
    private readonly dir: string,
    private readonly logs: Map<string, MachineLog>,
  ) {}

  static async open(dataDir: string): Promise<FileStorage> {
    const dir = join(dataDir, MACHINES_DIR);
    await mkdir(dir, { recursive: true });
    await fsyncDirectory(dataDir);
    const logs = new Map<string, MachineLog>();
    for (const name of (await readdir(dir)).filter((n) => n.endsWith(LOG_SUFFIX)).sort()) {
      logs.set(machineIdOf(name), await loadMachineLog(join(dir, name)));
    }
    return new FileStorage(dir, logs);
  }

  async knows(machineId: string): Promise<boolean> {
    return (await this.head(machineId)).seq > 0;
  }

  async head(machineId: string): Promise<ChainPoint> {
    return this.logs.get(machineId)?.head ?? EMPTY_HEAD;
  }

  async append(machineId: string, records: ChainRecord[]): Promise<ChainPoint> {
    const machineLog = this.logs.get(machineId) ?? (await this.create(machineId));
    if (records.length === 0) return machineLog.head;
    const lines = records.map((record) => Buffer.from(journalLine(record), 'utf8'));
    const bytes = Buffer.concat(lines);
    try {
      for (let written = 0; written < bytes.length; ) {
        written += (await machineLog.handle.write(bytes, written, bytes.length - written, null)).bytesWritten;
      }
      await machineLog.handle.datasync();
    } catch (error) {
      // A half-written batch would sit before the next one and break the chain on disk.
      await machineLog.handle.truncate(machineLog.size).catch(() => undefined);
      throw error;
    }
    for (const line of lines) {
      machineLog.starts.push(machineLog.size);
      machineLog.size += line.length;
    }
    const last = records[records.length - 1];
    machineLog.head = { seq: last.seq, hash: last.hash };
    return machineLog.head;
  }

  async read(machineId: string, afterSeq: number, limit: number, maxBytes: number): Promise<ChainRecord[]> {
    const machineLog = this.logs.get(machineId);
    if (!machineLog || afterSeq >= machineLog.head.seq) return [];
    const { starts, size } = machineLog;
    const from = starts[afterSeq];
    let end = afterSeq + 1; // exclusive index into starts; one record at least
    while (end < starts.length && end - afterSeq < limit && (starts[end + 1] ?? size) - from <= maxBytes) end++;
    const to = starts[end] ?? size;
    const buffer = Buffer.alloc(to - from);
    await machineLog.handle.read(buffer, 0, buffer.length, from);
    return buffer
      .toString('utf8')
      .split('\n')
      .slice(0, -1)
      .map((line) => JSON.parse(line) as ChainRecord);
  }

  async machines(): Promise<{ machineId: string; head: ChainPoint }[]> {
    return [...this.logs]
      .filter(([, machineLog]) => machineLog.head.seq > 0)
      .map(([machineId, machineLog]) => ({ machineId, head: machineLog.head }));
  }

  async close(): Promise<void> {
    await Promise.all([...this.logs.values()].map((machineLog) => machineLog.handle.close()));
    this.logs.clear();
  }

  private async create(machineId: string): Promise<MachineLog> {
    const path = join(this.dir, fileNameOf(machineId));
    const handle = await open(path, 'a+', 0o600);
    await fsyncDirectory(this.dir);
    const machineLog: MachineLog = { handle, starts: [], size: 0, head: EMPTY_HEAD };
    this.logs.set(machineId, machineLog);
    return machineLog;
  }
}

/** Reads a machine file, verifying its chain from genesis; cuts a torn last line (a write never acknowledged). */
async function loadMachineLog(path: string): Promise<MachineLog> {
  const handle = await open(path, 'a+');
  try {
    const text = await handle.readFile();
    const walker = new ChainWalker({ ...EMPTY_HEAD }, sha256Hex);
    const starts: number[] = [];
    let offset = 0;
    for (let line = 1; ; line++) {
      const end = text.indexOf(0x0a, offset);
      if (end === -1) break;
      const record = parseLine(text.toString('utf8', offset, end));
      if (!record) throw new StorageLoadError(`${path} line ${line} is not a record; the file is damaged`);
      try {
        walker.accept(record);
      } catch (error) {
        if (error instanceof ChainBreak) throw new StorageLoadError(`${path} line ${line}: ${error.reason}: ${error.message}`);
        throw error;
      }
      starts.push(offset);
      offset = end + 1;
    }
    if (offset < text.length) {
      await handle.truncate(offset);
      await handle.datasync();
      log.warn('dropped a torn write that was never acknowledged', { file: path, bytes: text.length - offset });
    }
    return { handle, starts, size: offset, head: walker.head };
  } catch (error) {
    await handle.close();
    throw error;
  }
}

function parseLine(line: string): ChainRecord | null {
  try {
    const value: unknown = JSON.parse(line);
    return isRecordLike(value) ? value : null;
  } catch {
    return null;
  }
}

