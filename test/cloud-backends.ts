import { fileBackend, type CloudBackend } from './cloud-harness.js';

/** The storage backends every cloud test runs against. */
export function cloudBackends(): CloudBackend[] {
  return [fileBackend];
}
