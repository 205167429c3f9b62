import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { ErrorCodes } from '../../protocol/errors.js';
import type { CompleteTaskInput, CreateTaskInput, LogStepInput } from '../../protocol/methods.js';
import { PeerRefusal, unixSeconds, type PeerStore } from './store.js';

/** The slice of better-sqlite3's API used here (it is loaded at run time, without its types). */
interface Statement {
  run(...params: unknown[]): { lastInsertRowid: number | bigint };
  get(...params: unknown[]): unknown;
}
export interface SqliteDatabase {
  pragma(source: string): unknown;
  exec(source: string): void;
  prepare(source: string): Statement;
  transaction<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => R;
  close(): void;
}
export type SqliteDatabaseConstructor = new (file: string) => SqliteDatabase;

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, task_id TEXT NOT NULL, ts REAL NOT NULL);
  CREATE TABLE IF NOT EXISTS tasks (task_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, ts REAL NOT NULL, description TEXT NOT NULL,
    mode TEXT NOT NULL, plan TEXT NOT NULL, agent TEXT, status TEXT NOT NULL, completed_at REAL);
  CREATE TABLE IF NOT EXISTS steps (seq INTEGER PRIMARY KEY, task_id TEXT NOT NULL, step INTEGER NOT NULL, command TEXT NOT NULL,
    status TEXT NOT NULL, ts REAL NOT NULL, output TEXT, error TEXT, recovery TEXT, started_at REAL, duration_ms REAL, exit_code INTEGER);
  CREATE INDEX IF NOT EXISTS steps_by_task ON steps (task_id, step);
`;

/**
 * What a user would pick for a local log store: SQLite in WAL mode with synchronous=FULL, one
 * connection every producer funnels through, one transaction per write (so one WAL sync per step).
 */
export class SqliteStore implements PeerStore {
  private readonly db: SqliteDatabase;
  private readonly insertRecord: Statement;
  private readonly insertTask: Statement;
  private readonly insertStep: Statement;
  private readonly taskStatus: Statement;
  private readonly finishTask: Statement;
  readonly createTask: (params: CreateTaskInput) => { task_id: string; seq: number };
  readonly logStep: (params: LogStepInput) => { seq: number };
  readonly completeTask: (params: CompleteTaskInput) => { seq: number };

  constructor(Database: SqliteDatabaseConstructor, dataDir: string) {
    this.db = new Database(join(dataDir, 'task_history.sqlite'));
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.exec(SCHEMA);
    this.insertRecord = this.db.prepare('INSERT INTO records (type, task_id, ts) VALUES (?, ?, ?)');
    this.insertTask = this.db.prepare(
      'INSERT INTO tasks (task_id, seq, ts, description, mode, plan, agent, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
    );
    this.insertStep = this.db.prepare(
      `INSERT INTO steps (seq, task_id, step, command, status, ts, output, error, recovery, started_at, duration_ms, exit_code)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.taskStatus = this.db.prepare('SELECT status FROM tasks WHERE task_id = ?');
    this.finishTask = this.db.prepare('UPDATE tasks SET status = ?, completed_at = ? WHERE task_id = ?');
    this.createTask = this.db.transaction((params: CreateTaskInput) => this.applyCreate(params));
    this.logStep = this.db.transaction((params: LogStepInput) => this.applyStep(params));
    this.completeTask = this.db.transaction((params: CompleteTaskInput) => this.applyComplete(params));
  }

  bulk(writes: () => void): void {
    this.db.transaction(writes)();
  }

  close(): void {
    this.db.close();
  }

  private applyCreate(params: CreateTaskInput): { task_id: string; seq: number } {
    const taskId = randomUUID();
    const ts = unixSeconds();
    const seq = this.record('task_created', taskId, ts);
    this.insertTask.run(taskId, seq, ts, params.description, params.mode, JSON.stringify(params.steps), params.agent ?? null, 'running');
    return { task_id: taskId, seq };
  }

  private applyStep(params: LogStepInput): { seq: number } {
    this.requireRunning(params.task_id);
    const ts = unixSeconds();
    const seq = this.record('step_logged', params.task_id, ts);
    this.insertStep.run(
      seq, params.task_id, params.step_num, params.command, params.status, ts, params.output ?? null, params.error ?? null,
      params.recovery ?? null, params.started_at ?? null, params.duration_ms ?? null, params.exit_code ?? null,
    );
    return { seq };
  }

  private applyComplete(params: CompleteTaskInput): { seq: number } {
    this.requireRunning(params.task_id);
    const ts = unixSeconds();
    const seq = this.record('task_completed', params.task_id, ts);
    this.finishTask.run(params.final_status, ts, params.task_id);
    return { seq };
  }

  private record(type: string, taskId: string, ts: number): number {
    return Number(this.insertRecord.run(type, taskId, ts).lastInsertRowid);
  }

  private requireRunning(taskId: string): void {
    const row = this.taskStatus.get(taskId) as { status: string } | undefined;
    if (!row) throw new PeerRefusal(ErrorCodes.TaskNotFound, `no task ${taskId}`);
    if (row.status !== 'running') throw new PeerRefusal(ErrorCodes.TaskFinished, `task ${taskId} is ${row.status}`);
  }
}
