import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { CloudStorage } from './storage.js';

/** The endpoint's Prometheus metrics, served at /metrics; one registry per server. */
export class CloudMetrics {
  readonly registry = new Registry();
  readonly recordsStored = new Counter({
    name: 'taskhistory_cloud_records_stored_total',
    help: 'Records stored (new, not re-acknowledged ones)',
    registers: [this.registry],
  });
  readonly pushRefused = new Counter({
    name: 'taskhistory_cloud_push_refused_total',
    help: 'Pushed batches refused because they do not continue the stored chain',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly pushFailed = new Counter({
    name: 'taskhistory_cloud_push_storage_failures_total',
    help: 'Pushes that failed because the storage could not answer (nothing acknowledged)',
    registers: [this.registry],
  });
  readonly pushDuration = new Histogram({
    name: 'taskhistory_cloud_push_duration_seconds',
    help: 'Time from receiving a push to its answer',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly connections = new Gauge({
    name: 'taskhistory_cloud_connections',
    help: 'Open sync (WebSocket) connections',
    registers: [this.registry],
  });

  constructor(storage: CloudStorage) {
    new Gauge({
      name: 'taskhistory_cloud_storage_pool_in_use',
      help: 'Storage (database pool) connections in use',
      registers: [this.registry],
      collect() {
        this.set(storage.poolCounts().inUse);
      },
    });
    new Gauge({
      name: 'taskhistory_cloud_storage_pool_waiting',
      help: 'Requests waiting for a storage (database pool) connection, pushes waiting for their group included',
      registers: [this.registry],
      collect() {
        this.set(storage.poolCounts().waiting);
      },
    });
    collectDefaultMetrics({ register: this.registry, prefix: 'taskhistory_cloud_' });
  }
}
