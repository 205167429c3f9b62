import type pg from 'pg';
import type { StoredEvent } from '../protocol/fleet-api.js';
import { GENESIS_HASH, type ChainPoint, type ChainRecord } from '../protocol/records.js';
import { BatchRefused } from './chain-intake.js';
import { StorageUnavailable, type BatchIntake, type Extension } from './storage.js';
import { searchTextOf, taskChangesOf } from './task-facts.js';

/**
 * The push path of the PostgreSQL backend: pushes of different machines that arrive together are
 * stored by one statement, one transaction, one commit. Each of at most `connections` workers holds
 * a pooled connection while pushes are queued and takes every queued push (one per machine, up to
 * GROUP_MAX, GROUP_MAX_RECORDS) at a time: it reads their heads in one statement, checks each batch against its head
 * (the chain intake, in this process), then STORE_GROUP stores the batches, their task facts and
 * the new heads of the machines whose head is still the one read, and says which. A batch whose
 * head another push moved first (the same batch re-sent through another endpoint) goes back to the
 * queue and is checked again against the new head. No machine's state is kept between groups.
 *
 * On 2 cores one statement per push spent half of PostgreSQL's time per record on the statement
 * and its commit (bench scenario 7: 6,000 records/s in pushes of 10, 12,000 in pushes of 100).
 */
const GROUP_MAX = 64;
/** Records a group carries at most (but always one push): a group's statement is no larger than one daemon's largest push. */
const GROUP_MAX_RECORDS = 2000;
/** A push that another push's head move overtook this many times in a row (a fleet of duplicates) is answered 1004. */
const MAX_STORE_ATTEMPTS = 5;

export interface PushGroupOptions {
  pool: pg.Pool;
  /** Groups stored at once: each holds one pooled connection. */
  connections: number;
  /** How long a push may wait for its group before it is answered 1004. */
  waitMs: number;
  retryAfterMs: number;
  readHeld(client: pg.PoolClient, machineId: string, afterSeq: number, count: number): Promise<ChainRecord[]>;
  /** A database error as the StorageUnavailable a pusher is answered. */
  unavailable(error: unknown): StorageUnavailable;
  onStored(event: StoredEvent): void;
  describe: string;
}

interface QueuedPush {
  machineId: string;
  intake: BatchIntake;
  records: number;
  attempts: number;
  resolve(extension: Extension): void;
  reject(error: unknown): void;
  timer: NodeJS.Timeout | null;
}

interface CheckedPush {
  push: QueuedPush;
  head: ChainPoint;
  fresh: ChainRecord[];
}

export class PostgresPushGroups {
  private readonly queue: QueuedPush[] = [];
  private workers = 0;
  private connecting = false;

  constructor(private readonly options: PushGroupOptions) {}

  /** Pushes waiting for a group, for /metrics. */
  get waiting(): number {
    return this.queue.length;
  }

  /** Stores the batch `intake` picks against the machine's head; resolves once committed. */
  extend(machineId: string, intake: BatchIntake, records: number): Promise<Extension> {
    return new Promise((resolve, reject) => {
      const push: QueuedPush = { machineId, intake, records, attempts: 0, resolve, reject, timer: null };
      this.enqueue(push);
    });
  }

  private enqueue(push: QueuedPush): void {
    push.timer = setTimeout(() => {
      const at = this.queue.indexOf(push);
      if (at < 0) return;
      this.queue.splice(at, 1);
      push.reject(new StorageUnavailable(`${this.options.describe}: no connection to the database was free within ${this.options.waitMs} ms`, this.options.retryAfterMs));
    }, this.options.waitMs);
    this.queue.push(push);
    this.startWorker();
  }

  /** One worker connects at a time: a connected worker takes all that is queued, the next waits for what comes after. */
  private startWorker(): void {
    if (this.connecting || this.workers >= this.options.connections || this.queue.length === 0) return;
    this.workers++;
    this.connecting = true;
    void this.work().finally(() => {
      this.workers--;
      this.startWorker();
    });
  }

  private async work(): Promise<void> {
    let client: pg.PoolClient;
    try {
      client = await this.options.pool.connect();
    } catch (error) {
      // The database is down or refuses connections: every queued push hears it now, not after its wait.
      this.connecting = false;
      const failure = this.options.unavailable(error);
      for (const push of this.queue.splice(0)) {
        if (push.timer) clearTimeout(push.timer);
        push.reject(failure);
      }
      return;
    }
    this.connecting = false;
    this.startWorker();
    let broken: Error | undefined;
    try {
      for (let group = this.takeGroup(); group.length; group = this.takeGroup()) {
        try {
          await this.store(client, group);
        } catch (error) {
          // A connection whose statement failed (or timed out, still running) is discarded, not reused.
          broken = error as Error;
          const failure = this.options.unavailable(error);
          for (const push of group) push.reject(failure);
          return;
        }
      }
    } finally {
      client.release(broken);
    }
  }

  /** The queued pushes of distinct machines, oldest first, within the group's bounds; the rest wait for the next group. */
  private takeGroup(): QueuedPush[] {
    const group: QueuedPush[] = [];
    const machines = new Set<string>();
    let records = 0;
    for (let i = 0; i < this.queue.length && group.length < GROUP_MAX; ) {
      const push = this.queue[i];
      if (machines.has(push.machineId)) {
        i++;
        continue;
      }
      if (group.length && records + push.records > GROUP_MAX_RECORDS) break;
      records += push.records;
      machines.add(push.machineId);
      this.queue.splice(i, 1);
      if (push.timer) clearTimeout(push.timer);
      group.push(push);
    }
    return group;
  }

  private async store(client: pg.PoolClient, group: QueuedPush[]): Promise<void> {
    const { rows } = await client.query<{ machine_id: string; head_seq: number; head_hash: string }>({
      text: 'SELECT machine_id, head_seq, head_hash FROM machines WHERE machine_id = ANY($1::text[])',
      values: [group.map((push) => push.machineId)],
      name: 'heads',
    });
    const heads = new Map(rows.map((row) => [row.machine_id, { seq: row.head_seq, hash: row.head_hash }]));
    const checked: CheckedPush[] = [];
    for (const push of group) {
      const head = heads.get(push.machineId) ?? { seq: 0, hash: GENESIS_HASH };
      let fresh: ChainRecord[];
      try {
        fresh = await push.intake(head, (afterSeq, count) => this.options.readHeld(client, push.machineId, afterSeq, count));
      } catch (error) {
        if (!(error instanceof BatchRefused)) throw error;
        push.reject(error);
        continue;
      }
      if (fresh.length === 0) push.resolve({ head, stored: 0 });
      else checked.push({ push, head, fresh });
    }
    if (checked.length === 0) return;
    // Machines in one order in every group: two groups that share machines lock their heads in the same order.
    checked.sort((a, b) => (a.push.machineId < b.push.machineId ? -1 : a.push.machineId > b.push.machineId ? 1 : 0));
    const moved = new Set((await client.query<{ machine_id: string }>({ text: STORE_GROUP, values: storeGroupValues(checked), name: 'store-group' })).rows.map((row) => row.machine_id));
    for (const { push, fresh } of checked) {
      const last = fresh[fresh.length - 1];
      if (moved.has(push.machineId)) {
        this.options.onStored({ machine_id: push.machineId, first_seq: fresh[0].seq, last_seq: last.seq });
        push.resolve({ head: { seq: last.seq, hash: last.hash }, stored: fresh.length });
      } else if (++push.attempts === MAX_STORE_ATTEMPTS) {
        push.reject(new StorageUnavailable(`${this.options.describe}: machine ${push.machineId}'s head moved under ${push.attempts} pushes in a row`, this.options.retryAfterMs));
      } else {
        this.enqueue(push);
      }
    }
  }
}

/**
 * The batches of a group stored in one statement: for each machine whose head is still the one
 * read (the group's machine rows locked in machine_id order), the records, the tasks created in its batch (a
 * task_created for a held id replaces that task, as in the daemon's view), the steps and
 * completions of tasks created before it, and the head with the machine's task and running counts.
 * A machine's first push inserts its row. Answers the machine_ids whose head moved.
 */
const STORE_GROUP = `
  WITH batch AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::text[]) b(machine_id, old_seq, old_hash, new_seq, new_hash)
  ), locked AS (
    -- FOR UPDATE answers each row as it is once locked (a head another push moved while this one waited shows moved).
    SELECT m.machine_id, m.head_seq, m.head_hash FROM machines m WHERE m.machine_id = ANY($1::text[]) ORDER BY m.machine_id FOR UPDATE
  ), unmoved AS (
    SELECT l.machine_id FROM locked l JOIN batch b ON b.machine_id = l.machine_id WHERE l.head_seq = b.old_seq AND l.head_hash = b.old_hash
  ), touched AS (
    -- Every task the group creates or changes, with its held status (null when new): one index probe each (OFFSET 0 keeps it a probe).
    SELECT k.machine_id, k.task_id, k.created, k.new_status, h.status AS held_status
      FROM (SELECT c.machine_id, c.task_id, true AS created, c.status AS new_status FROM unnest($10::text[], $11::text[], $18::text[]) c(machine_id, task_id, status)
            UNION ALL
            SELECT u.machine_id, u.task_id, false, u.status FROM unnest($23::text[], $24::text[], $27::text[]) u(machine_id, task_id, status)) k
      LEFT JOIN LATERAL (SELECT t.status FROM tasks t WHERE t.machine_id = k.machine_id AND t.task_id = k.task_id OFFSET 0) h ON true
  ), counts AS (
    -- A new task adds one task; running gains the created running ones and loses the held running ones replaced or completed.
    SELECT b.machine_id, coalesce(k.tasks, 0) AS tasks, coalesce(k.running, 0) AS running FROM batch b LEFT JOIN (
      SELECT machine_id,
             count(*) FILTER (WHERE created AND held_status IS NULL) AS tasks,
             count(*) FILTER (WHERE created AND new_status = 'running') - count(*) FILTER (WHERE held_status = 'running' AND (created OR new_status IS NOT NULL)) AS running
        FROM touched GROUP BY machine_id) k ON k.machine_id = b.machine_id
  ), moved_existing AS (
    UPDATE machines m SET head_seq = b.new_seq, head_hash = b.new_hash, last_push_at = now(), tasks = m.tasks + c.tasks, running = m.running + c.running
      FROM batch b JOIN counts c ON c.machine_id = b.machine_id
     WHERE m.machine_id = b.machine_id AND m.machine_id IN (SELECT machine_id FROM unmoved)
    RETURNING m.machine_id
  ), moved_new AS (
    INSERT INTO machines (machine_id, head_seq, head_hash, last_push_at, tasks, running)
    SELECT b.machine_id, b.new_seq, b.new_hash, now(), c.tasks, c.running FROM batch b JOIN counts c ON c.machine_id = b.machine_id
     WHERE b.old_seq = 0 AND NOT EXISTS (SELECT 1 FROM machines m WHERE m.machine_id = b.machine_id)
     ORDER BY b.machine_id
    ON CONFLICT (machine_id) DO NOTHING
    RETURNING machine_id
  ), moved AS (
    SELECT machine_id FROM moved_existing UNION ALL SELECT machine_id FROM moved_new
  ), stored AS (
    INSERT INTO records (machine_id, seq, task_id, record)
    SELECT r.* FROM unnest($6::text[], $7::bigint[], $8::text[], $9::text[]) r(machine_id, seq, task_id, record)
     WHERE r.machine_id IN (SELECT machine_id FROM moved)
  ), created AS (
    INSERT INTO tasks (machine_id, task_id, created, seq, description, mode, plan, agent, status, completed, completed_seq, steps, search)
    SELECT c.* FROM unnest($10::text[], $11::text[], $12::float8[], $13::bigint[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::float8[], $20::bigint[], $21::jsonb[], $22::text[])
           c(machine_id, task_id, created, seq, description, mode, plan, agent, status, completed, completed_seq, steps, search)
     WHERE c.machine_id IN (SELECT machine_id FROM moved)
    ON CONFLICT (machine_id, task_id) DO UPDATE SET created = EXCLUDED.created, seq = EXCLUDED.seq, description = EXCLUDED.description, mode = EXCLUDED.mode,
      plan = EXCLUDED.plan, agent = EXCLUDED.agent, status = EXCLUDED.status, completed = EXCLUDED.completed, completed_seq = EXCLUDED.completed_seq,
      steps = EXCLUDED.steps, search = EXCLUDED.search
  ), appended AS (
    UPDATE tasks t SET steps = t.steps || u.steps, search = t.search || u.search,
           status = coalesce(u.status, t.status), completed = coalesce(u.completed, t.completed), completed_seq = coalesce(u.completed_seq, t.completed_seq)
      FROM unnest($23::text[], $24::text[], $25::jsonb[], $26::text[], $27::text[], $28::float8[], $29::bigint[]) AS u(machine_id, task_id, steps, search, status, completed, completed_seq)
     WHERE t.machine_id = u.machine_id AND t.task_id = u.task_id AND u.machine_id IN (SELECT machine_id FROM moved)
  )
  SELECT machine_id FROM moved`;

/** STORE_GROUP's parameters: per machine its head move, then its records, created tasks and updated tasks, all as parallel arrays. */
function storeGroupValues(checked: CheckedPush[]): unknown[] {
  const columns = Array.from({ length: 29 }, (): unknown[] => []);
  const add = (from: number, ...values: unknown[]) => values.forEach((value, i) => columns[from + i].push(value));
  for (const { push, head, fresh } of checked) {
    const machineId = push.machineId;
    const last = fresh[fresh.length - 1];
    add(0, machineId, head.seq, head.hash, last.seq, last.hash);
    for (const record of fresh) add(5, machineId, record.seq, 'task_id' in record ? record.task_id : null, JSON.stringify(record));
    for (const change of taskChangesOf(machineId, fresh)) {
      const task = change.created;
      if (task) {
        add(9, machineId, task.task_id, task.timestamp, task.seq, task.description, task.mode, JSON.stringify(task.plan), task.agent ?? null, task.status);
        add(18, task.completed_at ?? null, task.completed_seq ?? null, JSON.stringify(task.steps), searchTextOf(task.description, task.steps));
      } else {
        add(22, machineId, change.taskId, JSON.stringify(change.steps), change.steps.map((step) => `\n${step.command}`).join(''));
        add(26, change.completion?.status ?? null, change.completion?.completed_at ?? null, change.completion?.completed_seq ?? null);
      }
    }
  }
  return columns;
}
