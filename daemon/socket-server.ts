import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readFileSync, unlinkSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage } from 'node:http';
import { createServer as createNetServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import WebSocket, { WebSocketServer } from 'ws';
import { ErrorCodes, ErrorMessages } from '../protocol/errors.js';
import { log } from '../node/log.js';
import { socketAccepts } from '../node/socket-probe.js';

/** One client, whichever framing it speaks. */
export interface Connection {
  readonly kind: 'websocket' | 'ndjson';
  send(text: string): void;
  onClose(listener: () => void): void;
}

export interface SocketServerOptions {
  socketPath: string;
  /** A listening descriptor passed by systemd socket activation; null to bind socketPath. */
  listenFd: number | null;
  /** Group allowed to connect: socket 0660, directory 0750. Without it 0600 and 0700. */
  group?: string;
  maxMessageBytes: number;
  onMessage(text: string, connection: Connection): Promise<string | null>;
}

export class SocketInUse extends Error {}

/** A client that stops reading is cut off once this much output waits for it. */
const SLOW_CONSUMER_BYTES = 64 * 1024 * 1024;
const CLOSE_GRACE_MS = 1000;

/**
 * The daemon's Unix socket. One listener serves two framings: a connection whose first byte is
 * `{` or `[` speaks newline-delimited JSON-RPC; anything else is handed to the HTTP server, where
 * a WebSocket upgrade at `/` speaks one JSON-RPC message per text frame.
 */
export class SocketServer {
  private readonly server: Server;
  private readonly http = createHttpServer((_request, response) => {
    response.writeHead(426, { 'content-type': 'text/plain' }).end('taskhistoryd speaks JSON-RPC over WebSocket (path /) or newline-delimited JSON on this socket\n');
  });
  private readonly wss: WebSocketServer;
  private readonly sockets = new Set<Socket>();
  private readonly webSockets = new Set<WebSocket>();
  private readonly lineSockets = new Set<Socket>();
  private boundPath: string | null = null;

  constructor(private readonly options: SocketServerOptions) {
    this.wss = new WebSocketServer({ noServer: true, maxPayload: options.maxMessageBytes });
    this.http.on('upgrade', (request: IncomingMessage, socket: Socket, head: Buffer) => {
      if (new URL(request.url ?? '/', 'http://localhost').pathname !== '/') {
        socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
        return;
      }
      this.wss.handleUpgrade(request, socket, head, (ws) => this.serveWebSocket(ws));
    });
    this.http.on('clientError', (_error, socket: Socket) => socket.destroy());
    // Half-open: a line client may shut down its sending side and still read every answer.
    this.server = createNetServer({ allowHalfOpen: true }, (socket) => this.sniff(socket));
  }

  async listen(): Promise<void> {
    const { listenFd, socketPath, group } = this.options;
    if (listenFd !== null) {
      await new Promise<void>((resolve, reject) => this.server.once('error', reject).listen({ fd: listenFd }, resolve));
      return;
    }
    const gid = group === undefined ? undefined : groupId(group);
    const dir = dirname(socketPath);
    if (!existsSync(dir)) {
      mkdirSync(dir, { recursive: true, mode: gid === undefined ? 0o700 : 0o750 });
      if (gid !== undefined) chownSync(dir, -1, gid);
    }
    await removeStaleSocket(socketPath);
    // Create the socket file without a window in which others could connect.
    const previousUmask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => this.server.once('error', reject).listen(socketPath, resolve));
    } finally {
      process.umask(previousUmask);
    }
    this.boundPath = socketPath;
    if (gid !== undefined) chownSync(socketPath, -1, gid);
    chmodSync(socketPath, gid === undefined ? 0o600 : 0o660);
  }

  get connectionCount(): number {
    return this.sockets.size;
  }

  /** Stops accepting connections; clients already connected stay. */
  stopAccepting(): void {
    this.server.close();
  }

  /** Closes every client (WebSocket close 1001), then removes the socket file if we bound it. */
  async close(): Promise<void> {
    this.stopAccepting();
    for (const ws of this.webSockets) ws.close(1001, 'taskhistoryd is shutting down');
    for (const socket of this.lineSockets) socket.end();
    const deadline = Date.now() + CLOSE_GRACE_MS;
    while (this.sockets.size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    for (const socket of this.sockets) socket.destroy();
    if (this.boundPath) {
      try {
        unlinkSync(this.boundPath);
      } catch {
        // already gone
      }
    }
  }

  private sniff(socket: Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    socket.once('data', (chunk: Buffer) => {
      if (chunk[0] === 0x7b || chunk[0] === 0x5b) {
        this.serveLines(socket, chunk);
        return;
      }
      socket.pause();
      socket.unshift(chunk);
      this.http.emit('connection', socket);
      socket.resume();
    });
  }

  private dispatch(text: string, connection: Connection): Promise<void> {
    return this.options.onMessage(text, connection).then(
      (answer) => {
        if (answer !== null) connection.send(answer);
      },
      (error) => log.error('a message could not be handled', { error: String(error) }),
    );
  }

  private serveWebSocket(ws: WebSocket): void {
    this.webSockets.add(ws);
    const closeListeners: (() => void)[] = [];
    const connection: Connection = {
      kind: 'websocket',
      send: (text) => {
        if (ws.readyState !== WebSocket.OPEN) return;
        if (ws.bufferedAmount > SLOW_CONSUMER_BYTES) {
          log.warn('cut off a client that stopped reading', { buffered_bytes: ws.bufferedAmount });
          ws.terminate();
          return;
        }
        ws.send(text);
      },
      onClose: (listener) => closeListeners.push(listener),
    };
    // An oversize or malformed frame emits 'error' (and ws closes with 1009/1002): never fatal.
    ws.on('error', (error) => log.debug('websocket client error', { error: error.message }));
    ws.on('message', (data, isBinary) => this.dispatch(isBinary ? Buffer.from(data as Buffer).toString('utf8') : data.toString(), connection));
    ws.on('close', () => {
      this.webSockets.delete(ws);
      for (const listener of closeListeners) listener();
    });
  }

  private serveLines(socket: Socket, first: Buffer): void {
    const closeListeners: (() => void)[] = [];
    const connection: Connection = {
      kind: 'ndjson',
      send: (text) => {
        if (socket.destroyed || !socket.writable) return;
        if (socket.writableLength > SLOW_CONSUMER_BYTES) {
          log.warn('cut off a client that stopped reading', { buffered_bytes: socket.writableLength });
          socket.destroy();
          return;
        }
        socket.write(`${text}\n`);
      },
      onClose: (listener) => closeListeners.push(listener),
    };
    this.lineSockets.add(socket);
    socket.once('close', () => {
      this.lineSockets.delete(socket);
      closeListeners.forEach((listener) => listener());
    });
    // After the client's end, answer what is in flight, then end our side too.
    let inFlight = 0;
    let clientEnded = false;
    const endWhenAnswered = () => {
      if (clientEnded && inFlight === 0) socket.end();
    };
    const onLine = (line: string) => {
      inFlight++;
      void this.dispatch(line, connection).finally(() => {
        inFlight--;
        endWhenAnswered();
      });
    };
    const reader = new LineReader(this.options.maxMessageBytes, onLine, () =>
      connection.send(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: ErrorCodes.PayloadTooLarge, message: ErrorMessages[ErrorCodes.PayloadTooLarge], data: { limit: this.options.maxMessageBytes } } })),
    );
    reader.push(first);
    socket.on('data', (chunk: Buffer) => reader.push(chunk));
    socket.once('end', () => {
      reader.push(Buffer.from('\n')); // a last line without its newline still counts
      clientEnded = true;
      endWhenAnswered();
    });
  }
}

/** Splits a byte stream into `\n`-terminated lines of at most maxBytes; longer lines are skipped. */
class LineReader {
  private parts: Buffer[] = [];
  private size = 0;
  private skipping = false;

  constructor(
    private readonly maxBytes: number,
    private readonly onLine: (line: string) => void,
    private readonly onOversize: () => void,
  ) {}

  push(chunk: Buffer): void {
    let start = 0;
    for (let newline = chunk.indexOf(0x0a); newline !== -1; newline = chunk.indexOf(0x0a, start)) {
      this.take(chunk.subarray(start, newline));
      this.endLine();
      start = newline + 1;
    }
    this.take(chunk.subarray(start));
  }

  private take(part: Buffer): void {
    if (this.skipping || part.length === 0) return;
    if (this.size + part.length > this.maxBytes) {
      this.skipping = true;
      this.parts = [];
      this.size = 0;
      return;
    }
    this.parts.push(part);
    this.size += part.length;
  }

  private endLine(): void {
    if (this.skipping) {
      this.skipping = false;
      this.onOversize();
      return;
    }
    const line = Buffer.concat(this.parts, this.size).toString('utf8').trim();
    this.parts = [];
    this.size = 0;
    if (line) this.onLine(line);
  }
}

/** Removes a socket file left by a killed daemon; throws SocketInUse when a daemon answers on it. */
async function removeStaleSocket(socketPath: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(socketPath).isSocket();
  } catch {
    return; // nothing there
  }
  if (!isSocket) throw new SocketInUse(`${socketPath} exists and is not a socket; move it away or pass another --socket`);
  if (await socketAccepts(socketPath)) throw new SocketInUse(`another taskhistoryd is already serving on ${socketPath}; stop it first or pass another --socket`);
  unlinkSync(socketPath);
  log.info('removed a stale socket left by a daemon that did not shut down', { socket: socketPath });
}

/** The numeric id of a group name (or a number given as text), from /etc/group. */
function groupId(group: string): number {
  if (/^\d+$/.test(group)) return Number(group);
  const line = readFileSync('/etc/group', 'utf8')
    .split('\n')
    .find((entry) => entry.split(':')[0] === group);
  if (!line) throw new Error(`socket group "${group}" does not exist in /etc/group; create it (groupadd ${group}) or drop --socket-group`);
  return Number(line.split(':')[2]);
}
