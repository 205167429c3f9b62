import { EventEmitter } from 'node:events';
import pg from 'pg';
import type { FleetMachine, FleetTaskDetail, FleetTaskSummary, Incident, StepSummary, StoredEvent } from '../protocol/fleet-api.js';
import { log } from '../node/log.js';
import { GENESIS_HASH, type ChainPoint, type ChainRecord } from '../protocol/records.js';
import type { TaskView } from '../protocol/task-view.js';
import { BatchRefused } from './chain-intake.js';
import { migrate } from './migrations.js';
import { StorageUnavailable, type BatchIntake, type CloudStorage, type Extension, type TaskFilter, type TaskKey } from './storage.js';
import { taskDetailOf } from './task-detail.js';
import { searchTextOf, taskChangesOf, type TaskChange } from './task-facts.js';

/**
 * The fleet backend: every endpoint process on one PostgreSQL database, no per-machine state in
 * memory. A push is one transaction: the machine's head row locked (SELECT ... FOR UPDATE), the
 * batch checked against it, the new records inserted in one statement, the task facts and the
 * head updated, a NOTIFY for the live feed, COMMIT (durable as the server's synchronous_commit).
 */
const STORED_CHANNEL = 'taskhistory_stored';
/**
 * Every wait on the database is bounded, so a database that is down, hung or saturated answers a
 * request with StorageFailure (1004, retry_after_ms) in about a second whatever the load, and nothing
 * queues without end: POOL_WAIT_MS for a pooled connection (waiting for a free one, or opening one:
 * a stopped server refuses at once, a hung one times out), QUERY_TIMEOUT_MS for each statement
 * (the server's statement_timeout, and the client's own timer for a server that does not answer).
 * A connection whose statement failed is discarded, never reused mid-statement.
 */
const POOL_WAIT_MS = 1000;
const QUERY_TIMEOUT_MS = 1000;
const RETRY_AFTER_MS = 1000;
const LISTEN_RETRY_MS = 1000;
const POOL_SIZE = 20;

/** seq and the counters are bigint: within 2^53, read them as numbers. */
const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === pg.types.builtins.INT8 ? Number : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
};

/** The URL without its password, for messages. */
export function describeDatabase(url: string): string {
  try {
    const parsed = new URL(url);
    parsed.password = '';
    return parsed.toString();
  } catch {
    return 'the database URL given (not a valid URL)';
  }
}

export class PostgresStorage implements CloudStorage {
  private readonly events = new EventEmitter();
  private listener: pg.Client | null = null;
  private closed = false;

  private constructor(
    readonly pool: pg.Pool,
    private readonly url: string,
  ) {
    this.events.setMaxListeners(0);
  }

  /** Connects, migrates the schema and starts the live feed. Nothing is read from the stored data. */
  static async open(url: string): Promise<PostgresStorage> {
    const pool = new pg.Pool({
      connectionString: url,
      max: POOL_SIZE,
      connectionTimeoutMillis: POOL_WAIT_MS,
      statement_timeout: QUERY_TIMEOUT_MS,
      query_timeout: QUERY_TIMEOUT_MS,
      types,
    });
    // An idle connection cut by the server (restart, failover) must not take the process down.
    pool.on('error', (error) => log.warn('a database connection was closed', { database: describeDatabase(url), error: error.message }));
    const storage = new PostgresStorage(pool, url);
    try {
      // Migrating may build indexes over everything stored: its own connection, without the request bounds.
      const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: POOL_WAIT_MS });
      await client.connect();
      try {
        const applied = await migrate(client, describeDatabase(url));
        if (applied.length) log.info('migrated the database', { database: describeDatabase(url), versions: applied.join(',') });
      } finally {
        await client.end();
      }
      await storage.listen();
    } catch (error) {
      await pool.end();
      throw error;
    }
    return storage;
  }

  async knows(machineId: string): Promise<boolean> {
    return (await this.head(machineId)).seq > 0;
  }

  async head(machineId: string): Promise<ChainPoint> {
    const { rows } = await this.query<{ head_seq: number; head_hash: string }>('SELECT head_seq, head_hash FROM machines WHERE machine_id = $1', [machineId]);
    return rows.length ? { seq: rows[0].head_seq, hash: rows[0].head_hash } : { seq: 0, hash: GENESIS_HASH };
  }

  async extend(machineId: string, intake: BatchIntake): Promise<Extension> {
    const client = await this.connect();
    let broken: unknown;
    try {
      await client.query('BEGIN');
      await client.query('INSERT INTO machines (machine_id) VALUES ($1) ON CONFLICT DO NOTHING', [machineId]);
      const { rows } = await client.query<{ head_seq: number; head_hash: string }>('SELECT head_seq, head_hash FROM machines WHERE machine_id = $1 FOR UPDATE', [machineId]);
      const head = { seq: rows[0].head_seq, hash: rows[0].head_hash };
      const fresh = await intake(head, (afterSeq, count) => readRecords(client, machineId, afterSeq, count, Number.MAX_SAFE_INTEGER));
      if (fresh.length === 0) {
        await client.query('ROLLBACK');
        return { head, stored: 0 };
      }
      await client.query('INSERT INTO records (machine_id, seq, task_id, record) SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[])', [
        machineId,
        fresh.map((record) => record.seq),
        fresh.map((record) => ('task_id' in record ? record.task_id : null)),
        fresh.map((record) => JSON.stringify(record)),
      ]);
      const counts = await applyTaskChanges(client, machineId, taskChangesOf(machineId, fresh));
      const last = fresh[fresh.length - 1];
      await client.query('UPDATE machines SET head_seq = $2, head_hash = $3, last_push_at = now(), tasks = tasks + $4, running = running + $5 WHERE machine_id = $1', [
        machineId,
        last.seq,
        last.hash,
        counts.tasks,
        counts.running,
      ]);
      const event: StoredEvent = { machine_id: machineId, first_seq: fresh[0].seq, last_seq: last.seq };
      await client.query('SELECT pg_notify($1, $2)', [STORED_CHANNEL, JSON.stringify(event)]);
      await client.query('COMMIT');
      return { head: { seq: last.seq, hash: last.hash }, stored: fresh.length };
    } catch (error) {
      // A refused batch leaves a sound connection; after a database error it is discarded (the server rolls back).
      if (error instanceof BatchRefused) await client.query('ROLLBACK').catch((rollback: unknown) => (broken = rollback));
      else broken = error;
      if (error instanceof BatchRefused) throw error;
      throw this.unavailable(error);
    } finally {
      client.release(broken as Error | undefined);
    }
  }

  async read(machineId: string, afterSeq: number, limit: number, maxBytes: number): Promise<ChainRecord[]> {
    try {
      return await readRecords(this.pool, machineId, afterSeq, limit, maxBytes);
    } catch (error) {
      throw this.unavailable(error);
    }
  }

  async machines(): Promise<{ machineId: string; head: ChainPoint }[]> {
    const { rows } = await this.query<{ machine_id: string; head_seq: number; head_hash: string }>(
      'SELECT machine_id, head_seq, head_hash FROM machines WHERE head_seq > 0 ORDER BY machine_id',
    );
    return rows.map((row) => ({ machineId: row.machine_id, head: { seq: row.head_seq, hash: row.head_hash } }));
  }

  async recordIncident(incident: Omit<Incident, 'at'>): Promise<void> {
    await this.query('INSERT INTO incidents (machine_id, seq, reason, detail) VALUES ($1, $2, $3, $4)', [incident.machine_id, incident.seq, incident.reason, incident.detail]);
  }

  async fleetMachines(query: { only?: string; limit: number; afterMachineId?: string }): Promise<FleetMachine[]> {
    const { rows } = await this.query<{ machine_id: string; head_seq: number; head_hash: string; last_push_at: Date | null; tasks: number; running: number; incidents: number }>(
      `SELECT m.machine_id, m.head_seq, m.head_hash, m.last_push_at, m.tasks, m.running,
              (SELECT count(*) FROM incidents i WHERE i.machine_id = m.machine_id)::integer AS incidents
         FROM machines m
        WHERE m.head_seq > 0 AND ($1::text IS NULL OR m.machine_id = $1) AND ($2::text IS NULL OR m.machine_id > $2)
        ORDER BY m.machine_id LIMIT $3`,
      [query.only ?? null, query.afterMachineId ?? null, query.limit],
    );
    return rows.map((row) => ({
      machine_id: row.machine_id,
      acked_seq: row.head_seq,
      head_hash: row.head_hash,
      last_push_at: row.last_push_at?.toISOString() ?? null,
      tasks: row.tasks,
      running: row.running,
      incidents: row.incidents,
    }));
  }

  async fleetTasks(filter: TaskFilter, limit: number, after?: TaskKey): Promise<FleetTaskSummary[]> {
    const conditions: string[] = [];
    const values: unknown[] = [];
    const bind = (value: unknown) => `$${values.push(value)}`;
    if (filter.machine !== undefined) conditions.push(`machine_id = ${bind(filter.machine)}`);
    if (filter.agent !== undefined) conditions.push(`agent = ${bind(filter.agent)}`);
    if (filter.status !== undefined) conditions.push(`status = ${bind(filter.status)}`);
    if (filter.since !== undefined) conditions.push(`created >= ${bind(filter.since)}`);
    if (filter.until !== undefined) conditions.push(`created <= ${bind(filter.until)}`);
    if (filter.q !== undefined) conditions.push(`search ILIKE ${bind(`%${filter.q.replace(/[\\%_]/g, '\\$&')}%`)}`);
    if (after) conditions.push(`(created, machine_id, seq) < (${bind(after.created)}, ${bind(after.machineId)}, ${bind(after.seq)})`);
    const { rows } = await this.query<TaskRow>(
      `SELECT machine_id, task_id, created, seq, description, mode, plan, agent, status, completed, completed_seq, steps
         FROM tasks ${conditions.length ? `WHERE ${conditions.join(' AND ')}` : ''}
        ORDER BY created DESC, machine_id DESC, seq DESC LIMIT ${bind(limit)}`,
      values,
    );
    return rows.map(summaryOfRow);
  }

  async task(machineId: string, taskId: string): Promise<FleetTaskDetail | null> {
    const { rows } = await this.query<{ record: string }>('SELECT record FROM records WHERE machine_id = $1 AND task_id = $2 ORDER BY seq', [machineId, taskId]);
    return taskDetailOf(machineId, taskId, rows.map((row) => JSON.parse(row.record) as ChainRecord));
  }

  async incidents(filter: { machine?: string; since?: number }, limit: number, beforeId?: number): Promise<(Incident & { id: number })[]> {
    const { rows } = await this.query<{ id: number; machine_id: string; seq: number; reason: Incident['reason']; detail: string; at: Date }>(
      `SELECT id, machine_id, seq, reason, detail, at FROM incidents
        WHERE ($1::text IS NULL OR machine_id = $1) AND ($2::float8 IS NULL OR at >= to_timestamp($2)) AND ($3::bigint IS NULL OR id < $3)
        ORDER BY id DESC LIMIT $4`,
      [filter.machine ?? null, filter.since ?? null, beforeId ?? null, limit],
    );
    return rows.map((row) => ({ id: row.id, machine_id: row.machine_id, seq: row.seq, reason: row.reason, detail: row.detail, at: row.at.toISOString() }));
  }

  async ready(): Promise<void> {
    await this.query('SELECT 1');
  }

  watchStored(listener: (event: StoredEvent) => void): () => void {
    this.events.on('stored', listener);
    return () => this.events.off('stored', listener);
  }

  poolCounts(): { inUse: number; waiting: number } {
    return { inUse: this.pool.totalCount - this.pool.idleCount, waiting: this.pool.waitingCount };
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.listener?.end().catch(() => undefined);
    await this.pool.end();
  }

  /** A dedicated connection LISTENing for every endpoint's pushes; reconnects while the storage is open. */
  private async listen(): Promise<void> {
    const client = new pg.Client({ connectionString: this.url, connectionTimeoutMillis: POOL_WAIT_MS, types });
    const retry = () => {
      if (this.listener !== client || this.closed) return;
      this.listener = null;
      setTimeout(() => this.listen().catch(retry), LISTEN_RETRY_MS).unref();
    };
    client.on('error', (error) => log.warn('the live feed lost its database connection; reconnecting', { error: error.message }));
    client.on('end', retry);
    client.on('notification', (message) => {
      if (message.channel === STORED_CHANNEL && message.payload) this.events.emit('stored', JSON.parse(message.payload) as StoredEvent);
    });
    this.listener = client;
    try {
      await client.connect();
      await client.query(`LISTEN ${STORED_CHANNEL}`);
    } catch (error) {
      await client.end().catch(() => undefined);
      throw error;
    }
  }

  private async connect(): Promise<pg.PoolClient> {
    try {
      return await this.pool.connect();
    } catch (error) {
      throw this.unavailable(error);
    }
  }

  private async query<R extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<pg.QueryResult<R>> {
    try {
      return await this.pool.query<R>(text, values);
    } catch (error) {
      throw this.unavailable(error);
    }
  }

  private unavailable(error: unknown): StorageUnavailable {
    if (error instanceof StorageUnavailable) return error;
    return new StorageUnavailable(`PostgreSQL at ${describeDatabase(this.url)}: ${(error as Error).message}`, RETRY_AFTER_MS);
  }
}

async function readRecords(client: pg.ClientBase | pg.Pool, machineId: string, afterSeq: number, limit: number, maxBytes: number): Promise<ChainRecord[]> {
  // At most `limit` records and about `maxBytes`, one record at least.
  const { rows } = await client.query<{ record: string }>(
    `SELECT record FROM (
       SELECT record, seq, sum(octet_length(record)) OVER (ORDER BY seq) AS total
         FROM records WHERE machine_id = $1 AND seq > $2 ORDER BY seq LIMIT $3
     ) page WHERE total <= $4 OR seq = $2 + 1 ORDER BY seq`,
    [machineId, afterSeq, limit, maxBytes],
  );
  return rows.map((row) => JSON.parse(row.record) as ChainRecord);
}

/** Inserts the tasks created in the batch and updates the others; returns how the machine's task and running counts change. */
async function applyTaskChanges(client: pg.ClientBase, machineId: string, changes: TaskChange[]): Promise<{ tasks: number; running: number }> {
  const counts = { tasks: 0, running: 0 };
  if (changes.length === 0) return counts;
  const { rows } = await client.query<{ task_id: string; status: string }>('SELECT task_id, status FROM tasks WHERE machine_id = $1 AND task_id = ANY($2::text[])', [
    machineId,
    changes.map((change) => change.taskId),
  ]);
  const held = new Map(rows.map((row) => [row.task_id, row.status]));
  const created = changes.filter((change) => change.created).map((change) => change.created!);
  const updated = changes.filter((change) => !change.created && held.has(change.taskId));
  for (const task of created) {
    // A task_created for a held id replaces that task, as in the daemon's view.
    if (!held.has(task.task_id)) counts.tasks++;
    else if (held.get(task.task_id) === 'running') counts.running--;
    if (task.status === 'running') counts.running++;
  }
  for (const change of updated) if (change.completion && held.get(change.taskId) === 'running') counts.running--;
  if (created.length) {
    await client.query(
      `INSERT INTO tasks (machine_id, task_id, created, seq, description, mode, plan, agent, status, completed, completed_seq, steps, search)
       SELECT $1, * FROM unnest($2::text[], $3::float8[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::float8[], $11::bigint[], $12::jsonb[], $13::text[])
       ON CONFLICT (machine_id, task_id) DO UPDATE SET created = EXCLUDED.created, seq = EXCLUDED.seq, description = EXCLUDED.description, mode = EXCLUDED.mode,
         plan = EXCLUDED.plan, agent = EXCLUDED.agent, status = EXCLUDED.status, completed = EXCLUDED.completed, completed_seq = EXCLUDED.completed_seq,
         steps = EXCLUDED.steps, search = EXCLUDED.search`,
      [
        machineId,
        created.map((task) => task.task_id),
        created.map((task) => task.timestamp),
        created.map((task) => task.seq),
        created.map((task) => task.description),
        created.map((task) => task.mode),
        created.map((task) => JSON.stringify(task.plan)),
        created.map((task) => task.agent ?? null),
        created.map((task) => task.status),
        created.map((task) => task.completed_at ?? null),
        created.map((task) => task.completed_seq ?? null),
        created.map((task) => JSON.stringify(task.steps)),
        created.map((task) => searchTextOf(task.description, task.steps)),
      ],
    );
  }
  if (updated.length) {
    await client.query(
      `UPDATE tasks t SET steps = t.steps || u.steps, search = t.search || u.search,
              status = coalesce(u.status, t.status), completed = coalesce(u.completed, t.completed), completed_seq = coalesce(u.completed_seq, t.completed_seq)
         FROM unnest($2::text[], $3::jsonb[], $4::text[], $5::text[], $6::float8[], $7::bigint[]) AS u(task_id, steps, search, status, completed, completed_seq)
        WHERE t.machine_id = $1 AND t.task_id = u.task_id`,
      [
        machineId,
        updated.map((change) => change.taskId),
        updated.map((change) => JSON.stringify(change.steps)),
        updated.map((change) => change.steps.map((step) => `\n${step.command}`).join('')),
        updated.map((change) => change.completion?.status ?? null),
        updated.map((change) => change.completion?.completed_at ?? null),
        updated.map((change) => change.completion?.completed_seq ?? null),
      ],
    );
  }
  return counts;
}

interface TaskRow {
  machine_id: string;
  task_id: string;
  created: number;
  seq: number;
  description: string;
  mode: TaskView['mode'];
  plan: string;
  agent: string | null;
  status: TaskView['status'];
  completed: number | null;
  completed_seq: number | null;
  steps: StepSummary[];
}

const STEP_KEYS = ['step', 'command', 'status', 'timestamp', 'started_at', 'duration_ms', 'exit_code', 'seq'] as const;

/** A row as the task list shows it: get_task's keys in get_task's order (jsonb reorders the steps' keys). */
function summaryOfRow(row: TaskRow): FleetTaskSummary {
  const plan = JSON.parse(row.plan) as unknown[];
  const steps = row.steps.map((step) => Object.fromEntries(STEP_KEYS.filter((key) => step[key] !== undefined).map((key) => [key, step[key]])) as StepSummary);
  return {
    task_id: row.task_id,
    timestamp: row.created,
    description: row.description,
    mode: row.mode,
    planned_steps: plan.length,
    steps,
    status: row.status,
    machine_id: row.machine_id,
    ...(row.agent !== null && { agent: row.agent }),
    plan,
    seq: row.seq,
    ...(row.completed !== null && { completed_at: row.completed }),
    ...(row.completed_seq !== null && { completed_seq: row.completed_seq }),
  };
}
