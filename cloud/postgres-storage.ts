import pg from 'pg';
import type { FleetMachine, FleetTaskDetail, FleetTaskSummary, Incident, StepSummary, StoredEvent } from '../protocol/fleet-api.js';
import { log } from '../node/log.js';
import { GENESIS_HASH, type ChainPoint, type ChainRecord } from '../protocol/records.js';
import type { TaskView } from '../protocol/task-view.js';
import { migrate } from './migrations.js';
import { PostgresPushGroups } from './postgres-push-groups.js';
import { PostgresStoredFeed } from './postgres-stored-feed.js';
import { StorageUnavailable, type BatchIntake, type CloudStorage, type Extension, type TaskFilter, type TaskKey } from './storage.js';
import { taskDetailOf } from './task-detail.js';

/**
 * The fleet backend: every endpoint process on one PostgreSQL database, no per-machine state in
 * memory. Pushes are stored in groups (PostgresPushGroups), each group one transaction, durable
 * as the server's synchronous_commit before the acknowledgements; the live feed goes out after it
 * (PostgresStoredFeed).
 *

 * Every wait on the database is bounded, so a database that is down, hung or saturated answers a
 * request with StorageFailure (1004, retry_after_ms) in about a second whatever the load, and nothing
 * queues without end: POOL_WAIT_MS for a pooled connection or a push's group (waiting for a free
 * one, or opening one: a stopped server refuses at once, a hung one times out), QUERY_TIMEOUT_MS for each statement
 * (the server's statement_timeout, and the client's own timer for a server that does not answer).
 * A connection whose statement failed is discarded, never reused mid-statement.
 */
const POOL_WAIT_MS = 1000;
const QUERY_TIMEOUT_MS = 1000;
const RETRY_AFTER_MS = 1000;
const POOL_SIZE = 10;
/** A text search first looks among this many newest tasks (that fit the other filters). */
const RECENT_TASKS_SEARCHED = 2000;
const TASK_COLUMNS = 'machine_id, task_id, created, seq, description, mode, plan, agent, status, completed, completed_seq, steps';
const QUALIFIED_TASK_COLUMNS = TASK_COLUMNS.split(', ').map((column) => `t.${column}`).join(', ');
/** A task's key and its place in the newest-first order. */
const TASK_KEYS = 'machine_id, task_id, created, seq';

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
  private readonly feed: PostgresStoredFeed;
  private readonly pushes: PostgresPushGroups;

  private constructor(
    readonly pool: pg.Pool,
    private readonly url: string,
  ) {
    this.feed = new PostgresStoredFeed(pool, { connectionString: url, connectionTimeoutMillis: POOL_WAIT_MS, types }, describeDatabase(url));
    this.pushes = new PostgresPushGroups({
      pool,
      connections: POOL_SIZE,
      waitMs: POOL_WAIT_MS,
      retryAfterMs: RETRY_AFTER_MS,
      readHeld: (client, machineId, afterSeq, count) => readRecords(client, machineId, afterSeq, count, Number.MAX_SAFE_INTEGER),
      unavailable: (error) => this.unavailable(error),
      onStored: (event) => this.feed.publish(event),
      describe: `PostgreSQL at ${describeDatabase(url)}`,
    });
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
      await storage.feed.listen();
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

  extend(machineId: string, intake: BatchIntake, records: number): Promise<Extension> {
    return this.pushes.extend(machineId, intake, records);
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
    // Both read keys only, then the page's rows whole: a page's worth of steps lists, not every match's.
    const rowsOf = (keys: string) =>
      `SELECT ${QUALIFIED_TASK_COLUMNS} FROM (${keys}) k JOIN tasks t ON t.machine_id = k.machine_id AND t.task_id = k.task_id ORDER BY k.created DESC, k.machine_id DESC, k.seq DESC`;
    const recent = await this.query<TaskRow>(
      rowsOf(`SELECT ${TASK_KEYS} FROM (SELECT ${TASK_KEYS}, search FROM tasks ${where([])} ORDER BY created DESC, machine_id DESC, seq DESC LIMIT ${RECENT_TASKS_SEARCHED}) recent
        WHERE ${matches} ${newest}`),
      values,
    );
    if (recent.rows.length === limit) return recent.rows.map(summaryOfRow);
    const { rows } = await this.query<TaskRow>(`WITH matched AS MATERIALIZED (SELECT ${TASK_KEYS} FROM tasks ${where([matches])}) ${rowsOf(`SELECT * FROM matched ${newest}`)}`, values);
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
    return this.feed.watch(listener);
  }

  poolCounts(): { inUse: number; waiting: number } {
    return { inUse: this.pool.totalCount - this.pool.idleCount, waiting: this.pool.waitingCount + this.pushes.waiting };
  }

  async close(): Promise<void> {
    await this.feed.close();
    await this.pool.end();
  }

  /** A `name`d statement is parsed and planned once per connection. */
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
