import { fileBackend, type CloudBackend } from './cloud-harness.js';
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
