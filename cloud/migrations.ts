import type pg from 'pg';

/**
 * The PostgreSQL schema, as numbered migrations applied in order, each once, all in one transaction
 * under an advisory lock (endpoints starting together migrate once). Every table is keyed by
 * machine_id first, so the schema can be distributed by it (Citus: `create_distributed_table`).
 * Text keys use the "C" collation: byte order, as the file backend sorts.
 */
interface Migration {
  version: number;
  name: string;
  sql: string;
}

const MIGRATIONS: Migration[] = [
  {
    version: 1,
    name: 'machines, records, tasks, incidents, tokens',
    sql: `
      CREATE EXTENSION IF NOT EXISTS pg_trgm;
      CREATE TABLE machines (
        machine_id text COLLATE "C" PRIMARY KEY,
        head_seq bigint NOT NULL DEFAULT 0,
        head_hash text NOT NULL DEFAULT '${'0'.repeat(64)}',
        last_push_at timestamptz,
        tasks integer NOT NULL DEFAULT 0,
        running integer NOT NULL DEFAULT 0
      );
      -- Each record exactly as pushed: text, not jsonb (which reorders keys).
      CREATE TABLE records (
        machine_id text COLLATE "C" NOT NULL,
        seq bigint NOT NULL,
        task_id text COLLATE "C",
        record text NOT NULL,
        PRIMARY KEY (machine_id, seq)
      );
      CREATE INDEX records_by_task ON records (machine_id, task_id, seq) WHERE task_id IS NOT NULL;
      -- Task-level facts, kept up to date by the push transaction. steps: summaries without large fields.
      CREATE TABLE tasks (
        machine_id text COLLATE "C" NOT NULL,
        task_id text COLLATE "C" NOT NULL,
        created double precision NOT NULL,
        seq bigint NOT NULL,
        description text NOT NULL,
        mode text NOT NULL,
        plan text NOT NULL,
        agent text,
        status text NOT NULL,
        completed double precision,
        completed_seq bigint,
        steps jsonb NOT NULL,
        search text NOT NULL,
        PRIMARY KEY (machine_id, task_id)
      );
      CREATE INDEX tasks_newest ON tasks (created, machine_id, seq);
      CREATE INDEX tasks_by_machine ON tasks (machine_id, created, seq);
      CREATE INDEX tasks_by_agent ON tasks (agent, created, machine_id, seq);
      CREATE INDEX tasks_by_status ON tasks (status, created, machine_id, seq);
      CREATE INDEX tasks_search ON tasks USING gin (search gin_trgm_ops);
      CREATE TABLE incidents (
        id bigserial PRIMARY KEY,
        machine_id text COLLATE "C" NOT NULL,
        seq bigint NOT NULL,
        reason text NOT NULL,
        detail text NOT NULL,
        at timestamptz NOT NULL DEFAULT now()
      );
      CREATE INDEX incidents_by_machine ON incidents (machine_id, id);
      -- Only the SHA-256 of a token is kept.
      CREATE TABLE tokens (
        id text PRIMARY KEY,
        name text,
        scope text NOT NULL CHECK (scope IN ('machine', 'admin', 'viewer')),
        machine_id text COLLATE "C" CHECK ((scope = 'machine') = (machine_id IS NOT NULL)),
        digest text NOT NULL UNIQUE,
        created_at timestamptz NOT NULL DEFAULT now(),
        last_used_at timestamptz,
        revoked_at timestamptz
      );
    `,
  },
];

export const MINIMUM_SERVER_VERSION = 130000;
const MIGRATION_LOCK = 0x7461736b; // 'task'

export class DatabaseTooOld extends Error {}

/** Applies the migrations the database lacks; returns the versions applied now (none on a migrated database). */
export async function migrate(client: pg.ClientBase, where: string): Promise<number[]> {
  const { rows } = await client.query<{ server_version_num: string; server_version: string }>(
    "SELECT current_setting('server_version_num') AS server_version_num, current_setting('server_version') AS server_version",
  );
  if (Number(rows[0].server_version_num) < MINIMUM_SERVER_VERSION) {
    throw new DatabaseTooOld(`${where} runs PostgreSQL ${rows[0].server_version}; taskhistory-cloud needs PostgreSQL 13 or newer`);
  }
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
    await client.query('CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())');
    const applied = new Set((await client.query<{ version: number }>('SELECT version FROM schema_migrations')).rows.map((row) => row.version));
    const now: number[] = [];
    for (const migration of MIGRATIONS.filter((m) => !applied.has(m.version))) {
      await client.query(migration.sql);
      await client.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [migration.version, migration.name]);
      now.push(migration.version);
    }
    await client.query('COMMIT');
    return now;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}
