import { createServer } from 'node:http';
import { mkdirSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { WebSocketServer } from 'ws';
import { ErrorCodes } from '../../protocol/errors.js';
import type { CompleteTaskInput, CreateTaskInput, LogStepInput } from '../../protocol/methods.js';
import { Workload } from '../workload.js';
import { JsonRewriteStore } from './json-rewrite.js';
import { loadBetterSqlite } from './sqlite-install.js';
import { SqliteStore } from './sqlite.js';
import { PEER_KINDS, PeerRefusal, type PeerStore } from './store.js';

/**
 * A peer behind the same wire as the daemon (JSON-RPC over WebSocket on a Unix socket, the same
 * method names and params), so one load generator measures ours and the peers alike.
 *
 *   node dist/bench/peers/peer-server.js --store sqlite|json-fsync|json-nofsync --socket S --data-dir D
 *     [--max-tasks N] [--sqlite-module-dir DIR] [--prefill-output-bytes N --prefill-output-size N]
 */
const { values: args } = parseArgs({
  options: {
    store: { type: 'string' },
    socket: { type: 'string' },
    'data-dir': { type: 'string' },
    'max-tasks': { type: 'string', default: '100' },
    'sqlite-module-dir': { type: 'string' },
    'prefill-output-bytes': { type: 'string', default: '0' },
    'prefill-output-size': { type: 'string', default: '32768' },
  },
});

function openStore(kind: string, dataDir: string): PeerStore {
  mkdirSync(dataDir, { recursive: true });
  const maxTasks = Number(args['max-tasks']);
  if (kind === 'json-fsync') return new JsonRewriteStore(dataDir, maxTasks, true);
  if (kind === 'json-nofsync') return new JsonRewriteStore(dataDir, maxTasks, false);
  if (kind === 'sqlite' && args['sqlite-module-dir']) return new SqliteStore(loadBetterSqlite(args['sqlite-module-dir']), dataDir);
  throw new Error(`--store must be one of ${PEER_KINDS.join(', ')} (sqlite also needs --sqlite-module-dir); got ${kind}`);
}

/** Writes workload tasks until their outputs add up to `bytes`: the "log already holds N MB" state. */
function prefill(store: PeerStore, bytes: number, outputSize: number): void {
  const workload = new Workload(0, outputSize);
  let written = 0;
  store.bulk(() => {
    while (written < bytes) {
      const plan = workload.nextTask();
      const { task_id } = store.createTask(plan.create);
      for (const step of plan.steps) {
        store.logStep({ task_id, ...step });
        written += step.output?.length ?? 0;
      }
      store.completeTask({ task_id, final_status: 'completed' });
    }
  });
}

/** Params arrive unvalidated: the peers trust the benchmark's own load generator. */
type Handler = (params: unknown) => unknown;

function handlersFor(store: PeerStore, kind: string): Record<string, Handler> {
  return {
    create_task: (params) => store.createTask(params as CreateTaskInput),
    log_step: (params) => store.logStep(params as LogStepInput),
    complete_task: (params) => store.completeTask(params as CompleteTaskInput),
    status: () => ({ peer: kind, pid: process.pid }),
  };
}

function answer(handlers: Record<string, Handler>, text: string): string {
  let request: { id?: unknown; method?: string; params?: unknown };
  try {
    request = JSON.parse(text);
  } catch {
    return JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: ErrorCodes.ParseError, message: 'Parse error' } });
  }
  const handler = request.method ? handlers[request.method] : undefined;
  if (!handler) return JSON.stringify({ jsonrpc: '2.0', id: request.id ?? null, error: { code: ErrorCodes.MethodNotFound, message: 'Method not found' } });
  try {
    return JSON.stringify({ jsonrpc: '2.0', id: request.id, result: handler(request.params ?? {}) });
  } catch (error) {
    const code = error instanceof PeerRefusal ? error.code : ErrorCodes.InternalError;
    return JSON.stringify({ jsonrpc: '2.0', id: request.id, error: { code, message: (error as Error).message } });
  }
}

function main(): void {
  const kind = args.store ?? '';
  const socketPath = args.socket;
  const dataDir = args['data-dir'];
  if (!socketPath || !dataDir) throw new Error('--socket and --data-dir are required');
  const store = openStore(kind, dataDir);
  prefill(store, Number(args['prefill-output-bytes']), Number(args['prefill-output-size']));
  const handlers = handlersFor(store, kind);

  mkdirSync(dirname(socketPath), { recursive: true });
  rmSync(socketPath, { force: true });
  const server = createServer();
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws) => {
    ws.on('error', () => ws.terminate());
    ws.on('message', (data) => ws.send(answer(handlers, data.toString())));
  });
  server.listen(socketPath);
  process.once('SIGTERM', () => {
    for (const client of wss.clients) client.terminate();
    server.close();
    store.close();
    process.exit(0);
  });
}

main();
