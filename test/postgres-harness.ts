import { afterAll } from 'vitest';
import { startPostgres, type PostgresCluster } from '../node/postgres-cluster.js';

export { postgresBinDir, type PostgresCluster } from '../node/postgres-cluster.js';

/**
 * This test file's PostgreSQL cluster: call at collection time (top level or in a describe); the
 * cluster starts on first use and is destroyed when the file ends.
 */
export function useTestCluster(): () => PostgresCluster {
  let cluster: PostgresCluster | null = null;
  afterAll(() => {
    cluster?.destroy();
    cluster = null;
  });
  return () => (cluster ??= startPostgres());
}
