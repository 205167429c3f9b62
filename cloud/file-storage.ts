import { EventEmitter } from 'node:events';
import { mkdir, open, readdir, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { ChainBreak, ChainWalker } from '../protocol/chain-verify.js';
import { journalLine } from '../protocol/data-file.js';
import { fsyncDirectory } from '../node/durable-files.js';
import { parseJournalLine } from '../node/journal-files.js';
import type { FleetMachine, FleetTaskDetail, FleetTaskSummary, Incident, StoredEvent } from '../protocol/fleet-api.js';
import { GENESIS_HASH, type ChainPoint, type ChainRecord } from '../protocol/records.js';
import { log } from '../node/log.js';
import { compareTaskKeys, type BatchIntake, type CloudStorage, type Extension, type TaskFilter, type TaskKey } from './storage.js';
import { taskDetailOf } from './task-detail.js';
import { searchTextOf, taskChangesOf } from './task-facts.js';
import { sha256Hex } from '../node/sha256.js';

/**
 * The default backend: one append-only JSONL file per machine under `<data-dir>/machines/`, each
 * line one record exactly as pushed, and `<data-dir>/incidents.jsonl`. Appends are fdatasync'ed
 * before they are acknowledged; the index (where each record's line starts, the head, the task
 * facts) lives in memory and is rebuilt, with the chain re-verified, on start. One process only:
 * the per-machine lock is in its memory.
 */
const MACHINES_DIR = 'machines';
const LOG_SUFFIX = '.jsonl';
const INCIDENTS_FILE = 'incidents.jsonl';
const STORED = 'stored';

interface TaskFacts {
  summary: FleetTaskSummary;
  /** Lower-cased description and step commands, for `q`. */
  search: string;
  /** Seqs of the task's records, for the full task. */
  seqs: number[];
}

interface MachineLog {
  handle: FileHandle;
  /** Byte offset where each record's line starts: starts[i] belongs to seq i + 1. */
  starts: number[];
  size: number;
  head: ChainPoint;
  lastPushAt: Date | null;
  tasks: Map<string, TaskFacts>;
  running: number;
}

/** A machine file that cannot be trusted: the endpoint refuses to start rather than serve or extend it. */
export class StorageLoadError extends Error {}

const EMPTY_HEAD: ChainPoint = { seq: 0, hash: GENESIS_HASH };

// Machine ids are percent-encoded so that no id can name a path outside the directory.
const fileNameOf = (machineId: string) => `${encodeURIComponent(machineId)}${LOG_SUFFIX}`;
const machineIdOf = (fileName: string) => decodeURIComponent(fileName.slice(0, -LOG_SUFFIX.length));

export class FileStorage implements CloudStorage {
  private readonly events = new EventEmitter();
  private readonly pushes = new PerMachineQueue();

  private constructor(
    private readonly dir: string,
    private readonly logs: Map<string, MachineLog>,
    private readonly incidentLog: { handle: FileHandle; incidents: (Incident & { id: number })[] },
  ) {
    this.events.setMaxListeners(0);
  }

  static async open(dataDir: string): Promise<FileStorage> {
    const dir = join(dataDir, MACHINES_DIR);
    // 0700 whatever the umask: the records are the fleet's audit trail.
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await fsyncDirectory(dataDir);
    const logs = new Map<string, MachineLog>();
    for (const name of (await readdir(dir)).filter((n) => n.endsWith(LOG_SUFFIX)).sort()) {
      const machineId = machineIdOf(name);
      logs.set(machineId, await loadMachineLog(join(dir, name), machineId));
    }
    return new FileStorage(dir, logs, await loadIncidents(join(dataDir, INCIDENTS_FILE)));
  }

  async knows(machineId: string): Promise<boolean> {
    return (await this.head(machineId)).seq > 0;
  }

  async head(machineId: string): Promise<ChainPoint> {
    return this.logs.get(machineId)?.head ?? EMPTY_HEAD;
  }

  extend(machineId: string, intake: BatchIntake): Promise<Extension> {
    return this.pushes.run(machineId, async () => {
      const machineLog = await this.logFor(machineId);
      const fresh = await intake(machineLog.head, (afterSeq, count) => this.read(machineId, afterSeq, count, Number.MAX_SAFE_INTEGER));
      if (fresh.length > 0) await this.append(machineId, machineLog, fresh);
      return { head: machineLog.head, stored: fresh.length };
    });
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

  async recordIncident(incident: Omit<Incident, 'at'>): Promise<void> {
    const { handle, incidents } = this.incidentLog;
    const kept = { ...incident, at: new Date().toISOString() };
    await handle.write(`${JSON.stringify(kept)}\n`, null, 'utf8');
    await handle.datasync();
    incidents.push({ ...kept, id: incidents.length + 1 });
  }

  async fleetMachines(query: { only?: string; limit: number; afterMachineId?: string }): Promise<FleetMachine[]> {
    const counts = new Map<string, number>();
    for (const incident of this.incidentLog.incidents) counts.set(incident.machine_id, (counts.get(incident.machine_id) ?? 0) + 1);
    return [...this.logs]
      .filter(([machineId, machineLog]) => machineLog.head.seq > 0 && (query.only === undefined || machineId === query.only))
      .filter(([machineId]) => query.afterMachineId === undefined || machineId > query.afterMachineId)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .slice(0, query.limit)
      .map(([machineId, machineLog]) => ({
        machine_id: machineId,
        acked_seq: machineLog.head.seq,
        head_hash: machineLog.head.hash,
        last_push_at: machineLog.lastPushAt?.toISOString() ?? null,
        tasks: machineLog.tasks.size,
        running: machineLog.running,
        incidents: counts.get(machineId) ?? 0,
      }));
  }

  async fleetTasks(filter: TaskFilter, limit: number, after?: TaskKey): Promise<FleetTaskSummary[]> {
    const q = filter.q?.toLowerCase();
    const matches: { key: TaskKey; summary: FleetTaskSummary }[] = [];
    for (const [machineId, machineLog] of this.logs) {
      if (filter.machine !== undefined && machineId !== filter.machine) continue;
      for (const { summary, search } of machineLog.tasks.values()) {
        if (filter.agent !== undefined && summary.agent !== filter.agent) continue;
        if (filter.status !== undefined && summary.status !== filter.status) continue;
        if (filter.since !== undefined && summary.timestamp < filter.since) continue;
        if (filter.until !== undefined && summary.timestamp > filter.until) continue;
        if (q !== undefined && !search.includes(q)) continue;
        const key = { created: summary.timestamp, machineId, seq: summary.seq };
        if (after && compareTaskKeys(key, after) <= 0) continue;
        matches.push({ key, summary });
      }
    }
    return matches
      .sort((a, b) => compareTaskKeys(a.key, b.key))
      .slice(0, limit)
      .map(({ summary }) => structuredClone(summary));
  }

  async task(machineId: string, taskId: string): Promise<FleetTaskDetail | null> {
    const facts = this.logs.get(machineId)?.tasks.get(taskId);
    if (!facts) return null;
    const records: ChainRecord[] = [];
    for (const seq of facts.seqs) records.push(...(await this.read(machineId, seq - 1, 1, Number.MAX_SAFE_INTEGER)));
    return taskDetailOf(machineId, taskId, records);
  }

  async incidents(filter: { machine?: string; since?: number }, limit: number, beforeId?: number): Promise<(Incident & { id: number })[]> {
    const found: (Incident & { id: number })[] = [];
    const { incidents } = this.incidentLog;
    // Incident ids are their line numbers: id n sits at index n - 1.
    for (let index = Math.min(incidents.length, (beforeId ?? Infinity) - 1) - 1; index >= 0 && found.length < limit; index--) {
      const incident = incidents[index];
      if (filter.machine !== undefined && incident.machine_id !== filter.machine) continue;
      if (filter.since !== undefined && Date.parse(incident.at) / 1000 < filter.since) continue;
      found.push(incident);
    }
    return found;
  }

  async ready(): Promise<void> {
    await stat(this.dir);
  }

  watchStored(listener: (event: StoredEvent) => void): () => void {
    this.events.on(STORED, listener);
    return () => this.events.off(STORED, listener);
  }

  poolCounts(): { inUse: number; waiting: number } {
    return { inUse: 0, waiting: 0 };
  }

  async close(): Promise<void> {
    await Promise.all([...this.logs.values()].map((machineLog) => machineLog.handle.close()));
    await this.incidentLog.handle.close();
    this.logs.clear();
  }

  private async logFor(machineId: string): Promise<MachineLog> {
    const existing = this.logs.get(machineId);
    if (existing) return existing;
    const handle = await open(join(this.dir, fileNameOf(machineId)), 'a+', 0o600);
    await fsyncDirectory(this.dir);
    const machineLog: MachineLog = { ...emptyFacts(), handle, starts: [], size: 0, head: EMPTY_HEAD };
    this.logs.set(machineId, machineLog);
    return machineLog;
  }

  private async append(machineId: string, machineLog: MachineLog, records: ChainRecord[]): Promise<void> {
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
    machineLog.lastPushAt = new Date();
    applyTaskFacts(machineLog, machineId, records);
    this.events.emit(STORED, { machine_id: machineId, first_seq: records[0].seq, last_seq: last.seq } satisfies StoredEvent);
  }
}

/** Runs tasks one after another per machine, so that verify-then-append sees the head it verified against. */
class PerMachineQueue {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(machineId: string, task: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(machineId) ?? Promise.resolve();
    const result = previous.then(task, task);
    const tail = result.catch(() => undefined);
    this.tails.set(machineId, tail);
    void tail.then(() => {
      if (this.tails.get(machineId) === tail) this.tails.delete(machineId);
    });
    return result;
  }
}

function emptyFacts(): Pick<MachineLog, 'tasks' | 'running' | 'lastPushAt'> {
  return { tasks: new Map(), running: 0, lastPushAt: null };
}

function applyTaskFacts(machineLog: MachineLog, machineId: string, records: ChainRecord[]): void {
  for (const change of taskChangesOf(machineId, records)) {
    if (change.created) {
      const previous = machineLog.tasks.get(change.taskId);
      if (previous?.summary.status === 'running') machineLog.running--;
      const { created } = change;
      machineLog.tasks.set(change.taskId, { summary: created, search: searchTextOf(created.description, created.steps).toLowerCase(), seqs: [] });
      if (created.status === 'running') machineLog.running++;
      continue;
    }
    const facts = machineLog.tasks.get(change.taskId);
    if (!facts) continue; // steps of a task never created are not about a task (as in the daemon's view)
    facts.summary.steps.push(...change.steps);
    for (const step of change.steps) facts.search += `\n${step.command.toLowerCase()}`;
    if (change.completion) {
      if (facts.summary.status === 'running') machineLog.running--;
      Object.assign(facts.summary, change.completion);
    }
  }
  for (const record of records) {
    if ('task_id' in record) machineLog.tasks.get(record.task_id)?.seqs.push(record.seq);
  }
}

/** Reads a machine file, verifying its chain from genesis; cuts a torn last line (a write never acknowledged). */
async function loadMachineLog(path: string, machineId: string): Promise<MachineLog> {
  const handle = await open(path, 'a+');
  try {
    const text = await handle.readFile();
    const walker = new ChainWalker({ ...EMPTY_HEAD }, sha256Hex);
    const machineLog: MachineLog = { ...emptyFacts(), handle, starts: [], size: 0, head: EMPTY_HEAD };
    let offset = 0;
    for (let line = 1; ; line++) {
      const end = text.indexOf(0x0a, offset);
      if (end === -1) break;
      const record = parseJournalLine(text.toString('utf8', offset, end));
      if (!record) throw new StorageLoadError(`${path} line ${line} is not a record; the file is damaged`);
      try {
        walker.accept(record);
      } catch (error) {
        if (error instanceof ChainBreak) throw new StorageLoadError(`${path} line ${line}: ${error.reason}: ${error.message}`);
        throw error;
      }
      applyTaskFacts(machineLog, machineId, [record]);
      machineLog.starts.push(offset);
      offset = end + 1;
    }
    if (offset < text.length) {
      await handle.truncate(offset);
      await handle.datasync();
      log.warn('dropped a torn write that was never acknowledged', { file: path, bytes: text.length - offset });
    }
    machineLog.size = offset;
    machineLog.head = walker.head;
    machineLog.lastPushAt = offset > 0 ? (await handle.stat()).mtime : null;
    return machineLog;
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/** The incidents file; a torn last line (a write cut short) is cut off, so the next line starts clean. */
async function loadIncidents(path: string): Promise<{ handle: FileHandle; incidents: (Incident & { id: number })[] }> {
  const handle = await open(path, 'a+', 0o600);
  const text = await handle.readFile('utf8');
  const complete = text.lastIndexOf('\n') + 1;
  if (complete < text.length) await handle.truncate(Buffer.byteLength(text.slice(0, complete)));
  const incidents: (Incident & { id: number })[] = [];
  for (const line of text.slice(0, complete).split('\n').slice(0, -1)) {
    try {
      incidents.push({ ...(JSON.parse(line) as Incident), id: incidents.length + 1 });
    } catch {
      log.warn('skipped a damaged incident line', { file: path });
    }
  }
  return { handle, incidents };
}
