import { afterAll } from 'vitest';
import { killAllSpawned, removeTempDirs } from './processes.js';

afterAll(() => {
  killAllSpawned();
  removeTempDirs();
});
