import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { PeerKind } from '../peers/store.js';
import type { Framing } from '../rpc-socket.js';
import type { PeerName, Row } from '../report.js';
import { startDaemon, startFloor, startPeer, type ServerProcess } from '../servers.js';

/**
 * What every scenario is given: a scratch directory, the contenders (ours, then every peer that
 * could be started here), the floor, and a place for notes that belong under the results table.
 */
export type ContenderName = 'ours' | PeerName;

export interface StartOptions {
  maxTasks?: number;
  /** Ours only: its idle checkpoint delay. */
  checkpointIdleMs?: number;
  /** Peers only: the step outputs to load before serving (ours is filled through its socket). */
  prefillOutputBytes?: number;
  prefillOutputSize?: number;
  cpuProfileDir?: string;
  /** The floor serves one framing a process; ours serves both on one socket. */
  framing?: Framing;
}

export interface Running {
  socketPath: string;
  dataDir: string;
  process: ServerProcess;
}

export interface Contender {
  name: ContenderName;
  start(options?: StartOptions): Promise<Running>;
}

export interface BenchContext {
  contenders: Contender[];
  peers: Contender[];
  ours: Contender;
  /** The bare socket plus one fdatasync per group: what the transport and the disk cost alone. */
  floor: Contender;
  /** A new, empty directory under the run's scratch directory. */
  freshDir(label: string): string;
  say(line: string): void;
  note(text: string): void;
}

export function createContext(options: {
  workDir: string;
  peerKinds: PeerKind[];
  sqliteModuleDir?: string;
  say: (line: string) => void;
  note: (text: string) => void;
}): BenchContext {
  let dirs = 0;
  const freshDir = (label: string) => {
    const dir = join(options.workDir, `${++dirs}-${label}`);
    mkdirSync(dir, { recursive: true });
    return dir;
  };
  const ours: Contender = {
    name: 'ours',
    async start(start = {}) {
      const dir = freshDir('ours');
      const running = { socketPath: join(dir, 'd.sock'), dataDir: join(dir, 'data') };
      return { ...running, process: await startDaemon({ ...running, maxTasks: start.maxTasks, checkpointIdleMs: start.checkpointIdleMs, cpuProfileDir: start.cpuProfileDir }) };
    },
  };
  const floor: Contender = {
    name: 'floor',
    async start(start = {}) {
      const dir = freshDir('floor');
      const running = { socketPath: join(dir, 'f.sock'), dataDir: join(dir, 'data') };
      return { ...running, process: await startFloor({ ...running, framing: start.framing ?? 'websocket' }) };
    },
  };
  const peers = options.peerKinds.map(
    (kind): Contender => ({
      name: kind,
      async start(start = {}) {
        const dir = freshDir(kind);
        const running = { socketPath: join(dir, 'p.sock'), dataDir: join(dir, 'data') };
        const process = await startPeer(kind, { ...running, ...start, sqliteModuleDir: options.sqliteModuleDir });
        return { ...running, process };
      },
    }),
  );
  return { contenders: [ours, ...peers], peers, ours, floor, freshDir, say: options.say, note: options.note };
}

/** Starts the contender, runs `body` against it, and stops it whatever happens. */
export async function withServer<T>(contender: Contender, options: StartOptions, body: (running: Running) => Promise<T>): Promise<T> {
  const running = await contender.start(options);
  try {
    return await body(running);
  } finally {
    await running.process.stop();
  }
}

export type Outcomes<T> = Map<ContenderName, T | null>;

/**
 * Runs one measurement per contender, one after the other so they never share the CPUs. A
 * contender that fails gets null and a note naming the error; the others still run.
 */
export async function measureEach<T>(
  context: BenchContext,
  contenders: Contender[],
  label: string,
  measure: (contender: Contender) => Promise<T>,
): Promise<Outcomes<T>> {
  const outcomes: Outcomes<T> = new Map();
  for (const contender of contenders) {
    context.say(`${label}: ${contender.name}...`);
    try {
      outcomes.set(contender.name, await measure(contender));
    } catch (error) {
      context.note(`${label}, ${contender.name}: not measured: ${(error as Error).message.split('\n')[0]}`);
      outcomes.set(contender.name, null);
    }
  }
  return outcomes;
}

/** One table row from per-contender outcomes: ours in its column, each peer in its own. */
export function rowOf<T>(
  scenario: string,
  metric: string,
  outcomes: Outcomes<T>,
  figure: (outcome: T) => number,
  target?: Row['target'],
): Row {
  const value = (name: ContenderName) => {
    const outcome = outcomes.get(name);
    return outcome === null || outcome === undefined ? null : figure(outcome);
  };
  const peers: Row['peers'] = {};
  for (const name of outcomes.keys()) if (name !== 'ours') peers[name] = value(name);
  return { scenario, metric, ours: value('ours'), peers, ...(target && { target }) };
}
