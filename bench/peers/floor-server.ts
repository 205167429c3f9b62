import { closeSync, fdatasync, mkdirSync, openSync, rmSync, writeSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createNetServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { WebSocketServer, type WebSocket } from 'ws';
import { onLines } from '../line-framing.js';

/**
 * The floor: what the transport and one fdatasync per group cost with no work at all. Each
 * message's params are appended as one JSON line; the messages read while the previous group
 * syncs form the next group (one write, one fdatasync in the thread pool), and each is answered
 * once its group is durable. No validation, no chain, no state beyond a counter.
 *
 *   node dist/bench/peers/floor-server.js --framing websocket|newline --socket S --data-dir D
 */
const { values: args } = parseArgs({
  options: {
    framing: { type: 'string', default: 'websocket' },
    socket: { type: 'string' },
    'data-dir': { type: 'string' },
  },
});

interface Pending {
  line: string;
  answer: string;
  reply: (text: string) => void;
}

class GroupCommit {
  private readonly fd: number;
  private queue: Pending[] = [];
  private syncing = false;
  private seq = 0;

  constructor(file: string) {
    this.fd = openSync(file, 'a');
  }

  /** Parses just enough of a request to answer it: its id, method and params. */
  submit(text: string, reply: (text: string) => void): void {
    const request = JSON.parse(text) as { id?: number | string; method: string; params?: unknown };
    const seq = ++this.seq;
    const result = request.method === 'create_task' ? `{"task_id":"t${seq}","seq":${seq}}` : `{"seq":${seq}}`;
    this.queue.push({ line: `${JSON.stringify(request.params ?? null)}\n`, answer: `{"jsonrpc":"2.0","id":${JSON.stringify(request.id ?? null)},"result":${result}}`, reply });
    if (!this.syncing) setImmediate(() => this.flush());
  }

  private flush(): void {
    if (this.syncing || this.queue.length === 0) return;
    const group = this.queue;
    this.queue = [];
    this.syncing = true;
    writeSync(this.fd, group.map((pending) => pending.line).join(''));
    fdatasync(this.fd, (error) => {
      if (error) throw error;
      this.syncing = false;
      for (const pending of group) pending.reply(pending.answer);
      this.flush();
    });
  }

  close(): void {
    closeSync(this.fd);
  }
}

function serveWebSocket(socketPath: string, commit: GroupCommit): void {
  const http = createHttpServer();
  const wss = new WebSocketServer({ server: http, perMessageDeflate: false });
  wss.on('connection', (ws: WebSocket) => {
    ws.on('error', () => ws.terminate());
    ws.on('message', (data) => commit.submit(data.toString(), (text) => ws.send(text)));
  });
  http.listen(socketPath);
}

function serveNewline(socketPath: string, commit: GroupCommit): void {
  createNetServer((socket: Socket) => {
    socket.on('error', () => socket.destroy());
    onLines(socket, (line) => commit.submit(line, (text) => socket.write(`${text}\n`)));
  }).listen(socketPath);
}

const socketPath = args.socket;
const dataDir = args['data-dir'];
if (!socketPath || !dataDir || (args.framing !== 'websocket' && args.framing !== 'newline')) {
  process.stderr.write('usage: floor-server --framing websocket|newline --socket S --data-dir D\n');
  process.exit(2);
}
mkdirSync(dataDir, { recursive: true });
rmSync(socketPath, { force: true });
const commit = new GroupCommit(join(dataDir, 'floor.jsonl'));
if (args.framing === 'websocket') serveWebSocket(socketPath, commit);
else serveNewline(socketPath, commit);
process.once('SIGTERM', () => {
  commit.close();
  process.exit(0);
});
