import { homedir } from 'node:os';
import type { PathEnvironment } from '../protocol/paths.js';

/** This process's environment, uid and home: what the pure path rules of `protocol/paths.ts` read. */
export function currentPathEnvironment(): PathEnvironment {
  return { env: process.env, uid: process.getuid?.() ?? -1, home: homedir() };
}
