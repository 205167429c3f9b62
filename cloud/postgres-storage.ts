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
import { searchTextOf, taskChangesOf } from './task-facts.js';

/**
 * The fleet backend: every endpoint process on one PostgreSQL database, no per-machine state in
 * memory. A push is two statements (extend): the head read, then one statement that stores the
 * batch, its task facts, the new head and a NOTIFY for the live feed only if the head is still the
 * one read (its row locked by that statement), committed as one transaction (durable as the
 * server's synchronous_commit) before the acknowledgement.
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
/** A text search first looks among this many newest tasks (that fit the other filters). */
const RECENT_TASKS_SEARCHED = 2000;
const TASK_COLUMNS = 'machine_id, task_id, created, seq, description, mode, plan, agent, status, completed, completed_seq, steps';
/** A push whose head another push moved this many times in a row (a fleet of duplicates) is answered 1004. */
const MAX_STORE_ATTEMPTS = 5;

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
    return headOf((await this.query<HeadRow>(HEAD, [machineId], 'head')).rows);
  }

  /**
   * Two statements on one connection, no lock held across the endpoint's checks: the head is read,
   * the batch checked against it, and one statement (STORE_BATCH) stores the records, the task
   * facts and the new head only if the stored head is still the one read. Another endpoint that
   * moved the head first (the same batch re-sent there) makes it store nothing; the batch is then
   * checked again against the new head, where its records are already held.
   */
  async extend(machineId: string, intake: BatchIntake): Promise<Extension> {
    const client = await this.connection();
    let broken: unknown;
    try {
      for (let attempt = 1; ; attempt++) {
        const head = headOf((await client.query<HeadRow>({ text: HEAD, values: [machineId], name: 'head' })).rows);
        const fresh = await intake(head, (afterSeq, count) => readRecords(client, machineId, afterSeq, count, Number.MAX_SAFE_INTEGER));
        if (fresh.length === 0) return { head, stored: 0 };
        const last = fresh[fresh.length - 1];
        const { rows } = await client.query<{ moved: number }>({ text: STORE_BATCH, values: storeBatchValues(machineId, head, fresh), name: 'store-batch' });
        if (rows[0].moved === 1) return { head: { seq: last.seq, hash: last.hash }, stored: fresh.length };
        if (attempt === MAX_STORE_ATTEMPTS) {
          throw new StorageUnavailable(`PostgreSQL at ${describeDatabase(this.url)}: machine ${machineId}'s head moved under ${attempt} pushes in a row`, RETRY_AFTER_MS);
        }
      }
    } catch (error) {
      if (error instanceof BatchRefused || error instanceof StorageUnavailable) throw error;
      // A connection whose statement failed (or timed out, still running) is discarded, not reused.
      broken = error;
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
    if (after) conditions.push(`(created, machine_id, seq) < (${bind(after.created)}, ${bind(after.machineId)}, ${bind(after.seq)})`);
    const where = (extra: string[]) => (conditions.length + extra.length ? `WHERE ${[...conditions, ...extra].join(' AND ')}` : '');
    const newest = `ORDER BY created DESC, machine_id DESC, seq DESC LIMIT ${bind(limit)}`;
    if (filter.q === undefined) return (await this.query<TaskRow>(`SELECT ${TASK_COLUMNS} FROM tasks ${where([])} ${newest}`, values)).rows.map(summaryOfRow);
    const matches = `search ILIKE ${bind(`%${filter.q.replace(/[\\%_]/g, '\\$&')}%`)}`;
    // A term most tasks match is found among the newest tasks at once; a rarer one from the trigram
    // index. Walking newest first until enough match (the planner's choice for both) reads every
    // newer task when the matches are old: 57,000 rows for a bench query at 1,000,000 records.
    const recent = await this.query<TaskRow>(
      `SELECT ${TASK_COLUMNS} FROM (SELECT ${TASK_COLUMNS}, search FROM tasks ${where([])} ORDER BY created DESC, machine_id DESC, seq DESC LIMIT ${RECENT_TASKS_SEARCHED}) recent
        WHERE ${matches} ${newest}`,
      values,
    );
    if (recent.rows.length === limit) return recent.rows.map(summaryOfRow);
    const { rows } = await this.query<TaskRow>(`WITH matched AS MATERIALIZED (SELECT ${TASK_COLUMNS} FROM tasks ${where([matches])}) SELECT * FROM matched ${newest}`, values);
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

  private async connection(): Promise<pg.PoolClient> {
    try {
      return await this.pool.connect();
    } catch (error) {
      throw this.unavailable(error);
    }
  }

  /** A `name`d statement is parsed and planned once per connection: the push path's two. */
  private async query<R extends pg.QueryResultRow>(text: string, values: unknown[] = [], name?: string): Promise<pg.QueryResult<R>> {
    try {
      return await this.pool.query<R>({ text, values, name });
    } catch (error) {
      throw this.unavailable(error);
    }
  }

  private unavailable(error: unknown): StorageUnavailable {
    if (error instanceof StorageUnavailable) return error;
    return new StorageUnavailable(`PostgreSQL at ${describeDatabase(this.url)}: ${(error as Error).message}`, RETRY_AFTER_MS);
  }
}

const HEAD = 'SELECT head_seq, head_hash FROM machines WHERE machine_id = $1';
interface HeadRow {
  head_seq: number;
  head_hash: string;
}

function headOf(rows: HeadRow[]): ChainPoint {
  return rows.length ? { seq: rows[0].head_seq, hash: rows[0].head_hash } : { seq: 0, hash: GENESIS_HASH };
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

/**
 * One batch stored in one statement, only if the machine's head is still $2/$3: the records, the
 * tasks created in the batch (a task_created for a held id replaces that task, as in the daemon's
 * view), the steps and completions of tasks created before it, the head with the machine's task
 * and running counts, and the live feed's NOTIFY (sent at commit). Answers moved = 1 when stored,
 * 0 when another push moved the head first (then nothing is written).
 */
const STORE_BATCH = `
  WITH held AS (
    SELECT task_id, status FROM tasks WHERE machine_id = $1 AND task_id = ANY($9::text[] || $21::text[])
  ), counts AS (
    SELECT (SELECT count(*) FROM unnest($9::text[]) c(task_id) WHERE c.task_id NOT IN (SELECT task_id FROM held)) AS tasks,
           (SELECT count(*) FROM unnest($16::text[]) c(status) WHERE c.status = 'running')
             - (SELECT count(*) FROM held WHERE held.status = 'running'
                   AND (held.task_id = ANY($9::text[]) OR held.task_id IN (SELECT u.task_id FROM unnest($21::text[], $24::text[]) u(task_id, status) WHERE u.status IS NOT NULL))) AS running
  ), head_moved AS (
    -- A machine's first push inserts its row; a row already there moves only from the head read.
    INSERT INTO machines AS m (machine_id, head_seq, head_hash, last_push_at, tasks, running)
    SELECT $1, $4, $5, now(), counts.tasks, counts.running FROM counts WHERE $2 = 0 OR EXISTS (SELECT 1 FROM machines WHERE machine_id = $1)
    ON CONFLICT (machine_id) DO UPDATE SET head_seq = EXCLUDED.head_seq, head_hash = EXCLUDED.head_hash, last_push_at = EXCLUDED.last_push_at,
      tasks = m.tasks + EXCLUDED.tasks, running = m.running + EXCLUDED.running
      WHERE m.head_seq = $2 AND m.head_hash = $3
    RETURNING 1
  ), stored AS (
    INSERT INTO records (machine_id, seq, task_id, record)
    SELECT $1, r.seq, r.task_id, r.record FROM unnest($6::bigint[], $7::text[], $8::text[]) r(seq, task_id, record) WHERE EXISTS (SELECT 1 FROM head_moved)
  ), created AS (
    INSERT INTO tasks (machine_id, task_id, created, seq, description, mode, plan, agent, status, completed, completed_seq, steps, search)
    SELECT $1, c.* FROM unnest($9::text[], $10::float8[], $11::bigint[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[], $17::float8[], $18::bigint[], $19::jsonb[], $20::text[]) c
     WHERE EXISTS (SELECT 1 FROM head_moved)
    ON CONFLICT (machine_id, task_id) DO UPDATE SET created = EXCLUDED.created, seq = EXCLUDED.seq, description = EXCLUDED.description, mode = EXCLUDED.mode,
      plan = EXCLUDED.plan, agent = EXCLUDED.agent, status = EXCLUDED.status, completed = EXCLUDED.completed, completed_seq = EXCLUDED.completed_seq,
      steps = EXCLUDED.steps, search = EXCLUDED.search
  ), appended AS (
    UPDATE tasks t SET steps = t.steps || u.steps, search = t.search || u.search,
           status = coalesce(u.status, t.status), completed = coalesce(u.completed, t.completed), completed_seq = coalesce(u.completed_seq, t.completed_seq)
      FROM unnest($21::text[], $22::jsonb[], $23::text[], $24::text[], $25::float8[], $26::bigint[]) AS u(task_id, steps, search, status, completed, completed_seq)
     WHERE t.machine_id = $1 AND t.task_id = u.task_id AND EXISTS (SELECT 1 FROM head_moved)
  ), notified AS (
    SELECT pg_notify('${STORED_CHANNEL}', $27) FROM head_moved
  )
  SELECT (SELECT count(*) FROM head_moved)::integer AS moved, (SELECT count(*) FROM notified) AS notified`;

/** STORE_BATCH's parameters for the batch's new records `fresh`, stored after `head`. */
function storeBatchValues(machineId: string, head: ChainPoint, fresh: ChainRecord[]): unknown[] {
  const changes = taskChangesOf(machineId, fresh);
  const created = changes.filter((change) => change.created).map((change) => change.created!);
  const updated = changes.filter((change) => !change.created);
  const last = fresh[fresh.length - 1];
  const event: StoredEvent = { machine_id: machineId, first_seq: fresh[0].seq, last_seq: last.seq };
  return [
    machineId,
    head.seq,
    head.hash,
    last.seq,
    last.hash,
    fresh.map((record) => record.seq),
    fresh.map((record) => ('task_id' in record ? record.task_id : null)),
    fresh.map((record) => JSON.stringify(record)),
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
    updated.map((change) => change.taskId),
    updated.map((change) => JSON.stringify(change.steps)),
    updated.map((change) => change.steps.map((step) => `\n${step.command}`).join('')),
    updated.map((change) => change.completion?.status ?? null),
    updated.map((change) => change.completion?.completed_at ?? null),
    updated.map((change) => change.completion?.completed_seq ?? null),
    JSON.stringify(event),
  ];
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
