import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { fileBackend, type CloudBackend, type StorageSite } from './cloud-harness.js';
import { useTestCluster } from './postgres-harness.js';

/** The storage backends every cloud test runs against; call at collection time (it registers the cluster's clean-up). */
export function cloudBackends(): CloudBackend[] {
  return [fileBackend, postgresBackend()];
}

/** Each site is a fresh database in this test file's cluster. */
export function postgresBackend(): CloudBackend & { cluster: ReturnType<typeof useTestCluster> } {
  const cluster = useTestCluster();
  return {
    name: 'postgres',
    cluster,
    async newSite() {
      return { backend: 'postgres', args: ['--database-url', await cluster().createDatabase()] };
    },
  };
}

/** How many records the site holds for the machine, read from the storage itself (file lines or table rows). */
export async function storedRecordCount(site: StorageSite, machineId: string): Promise<number> {
  const [flag, where] = site.args;
  if (flag === '--data-dir') {
    const file = join(where, 'machines', `${encodeURIComponent(machineId)}.jsonl`);
    return readFileSync(file, 'utf8').split('\n').length - 1;
  }
  const client = new pg.Client({ connectionString: where });
  await client.connect();
  try {
    const { rows } = await client.query<{ count: string }>('SELECT count(*) FROM records WHERE machine_id = $1', [machineId]);
    return Number(rows[0].count);
  } finally {
    await client.end();
  }
}
