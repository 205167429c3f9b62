import { lchownSync, mkdtempSync, renameSync, rmSync, unlinkSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage } from 'node:http';
import { createServer as createNetServer, type Server, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { WebSocketServer } from 'ws';
import { ErrorCodes } from '../protocol/errors.js';
import { requireGroup } from '../node/account-lookup.js';
import { parserErrorStatus, refuseHttp, requestPath } from '../node/http-refusal.js';
import { log } from '../node/log.js';
import { prepareSocketDirectory } from '../node/socket-directory.js';
import { removeStaleSocket } from '../node/socket-probe.js';
import { BufferBudget } from './buffer-budget.js';
import type { ClientConnection, Connection } from './client-connection.js';
import { LineConnection } from './line-connection.js';
import { PeerConnectionCap } from './peer-connection-cap.js';
import { identifyPeer, type Peer } from './peer-identity.js';
import { WebSocketConnection } from './websocket-connection.js';
import type { Settings } from './settings.js';

export type { Connection } from './client-connection.js';
export { SocketInUse } from '../node/socket-probe.js';

/** The bounds on connections: the settings of those names (meaning and defaults in settings.ts and the README's security section). */
export type ConnectionLimits = Pick<Settings, 'maxMessageBytes' | 'maxConnections' | 'maxConnectionsPerUid' | 'handshakeTimeoutMs' | 'maxClientOutputBytes' | 'maxBufferedBytes'>;

export interface SocketServerOptions {
  socketPath: string;
  /** A listening descriptor passed by systemd socket activation; null to bind socketPath. */
  listenFd: number | null;
  /** Group allowed to connect: socket 0660, directory 0750. Without it 0600 and 0700. */
  group?: string;
  limits: ConnectionLimits;
  /** Read every peer's identity at accept (records carry it as their writer); false with --no-attribution. */
  attribution: boolean;
  onMessage(text: string, connection: Connection): Promise<string | null>;
}

/** A connection refused by a cap: what the client is told and what the log records. */
interface CapRefusal {
  reason: string;
  limit: number;
  /** Set when the per-uid cap refused it. */
  uid?: number;
  log: Record<string, number>;
}

const CLOSE_GRACE_MS = 1000;
/** Refusals of connections over the cap are logged at most this often. */
const REFUSAL_LOG_INTERVAL_MS = 10_000;

/**
 * The daemon's Unix socket. One listener serves two framings: a connection whose first byte is
 * `{` or `[` speaks newline-delimited JSON-RPC (LineConnection); anything else is handed to the
 * HTTP server, where a WebSocket upgrade at `/` speaks one message per text frame
 * (WebSocketConnection). Every connection is bounded (ConnectionLimits); nothing a client sends
 * can throw past this file.
 */
export class SocketServer {
  private readonly server: Server;
  private readonly http = createHttpServer((_request, response) => {
    response.writeHead(426, { 'content-type': 'text/plain' }).end('taskhistoryd speaks JSON-RPC over WebSocket (path /) or newline-delimited JSON on this socket\n');
  });
  private readonly wss: WebSocketServer;
  private readonly budget: BufferBudget;
  private readonly peerCap: PeerConnectionCap;
  private readonly sockets = new Set<Socket>();
  private readonly connections = new Set<ClientConnection>();
  /** Clears a socket's handshake deadline once it speaks the protocol. */
  private readonly handshakeDone = new WeakMap<Socket, () => void>();
  /** Who is at the other end of each accepted socket, read before it could send anything. */
  private readonly peers = new WeakMap<Socket, Peer | null>();
  private boundPath: string | null = null;
  private lastRefusalLog = 0;

  constructor(private readonly options: SocketServerOptions) {
    const { limits } = options;
    this.budget = new BufferBudget(limits.maxBufferedBytes);
    this.peerCap = new PeerConnectionCap(limits.maxConnectionsPerUid);
    this.wss = new WebSocketServer({ noServer: true, maxPayload: limits.maxMessageBytes });
    this.http.on('upgrade', (request: IncomingMessage, socket: Socket, head: Buffer) => this.upgrade(request, socket, head));
    this.http.on('clientError', (error: NodeJS.ErrnoException, socket: Socket) => refuseHttp(socket, parserErrorStatus(error)));
    // Half-open: a line client may shut down its sending side and still read every answer.
    this.server = createNetServer({ allowHalfOpen: true }, (socket) => this.sniff(socket));
  }

  async listen(): Promise<void> {
    const { listenFd, socketPath, group } = this.options;
    if (listenFd !== null) {
      await new Promise<void>((resolve, reject) => this.server.once('error', reject).listen({ fd: listenFd }, resolve));
      return;
    }
    const groupEntry = group === undefined ? undefined : requireGroup(group, 'socket group', '--socket-group');
    prepareSocketDirectory(dirname(socketPath), groupEntry);
    if (await removeStaleSocket(socketPath)) log.info('removed a stale socket left by a daemon that did not shut down', { socket: socketPath });
    // Bind in a fresh private directory, give the socket its group there, then move it into place:
    // its mode comes from the umask and nothing is ever changed through a path others could swap.
    const bindDir = mkdtempSync(join(dirname(socketPath), '.b-'));
    const bindPath = join(bindDir, 's');
    try {
      const previousUmask = process.umask(groupEntry ? 0o117 : 0o177);
      try {
        await new Promise<void>((resolve, reject) => this.server.once('error', reject).listen(bindPath, resolve));
      } finally {
        process.umask(previousUmask);
      }
      if (groupEntry) lchownSync(bindPath, -1, groupEntry.id);
      renameSync(bindPath, socketPath);
      this.boundPath = socketPath;
    } finally {
      rmSync(bindDir, { recursive: true, force: true });
    }
  }

  get connectionCount(): number {
    return this.sockets.size;
  }

  /** Bytes held for all connections together (see BufferBudget). */
  get bufferedBytes(): number {
    return this.budget.heldBytes;
  }

  /** Stops accepting connections; clients already connected stay. */
  stopAccepting(): void {
    this.server.close();
  }

  /** Closes every client (WebSocket close 1001), then removes the socket file if we bound it. */
  async close(): Promise<void> {
    this.stopAccepting();
    for (const connection of this.connections) connection.close();
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

  /** Picks the framing by the first byte, bounding how long a connection may take to speak. */
  private sniff(socket: Socket): void {
    const { limits } = this.options;
    const peer = this.identify(socket);
    if (peer === undefined) return;
    this.peers.set(socket, peer);
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    const refusal = this.capRefusal(socket);
    let onDeadline: () => void = () => socket.destroy(); // silent so far: a clean close
    const deadline = setTimeout(() => onDeadline(), limits.handshakeTimeoutMs);
    deadline.unref();
    socket.once('close', () => clearTimeout(deadline));
    this.handshakeDone.set(socket, () => clearTimeout(deadline));
    socket.once('data', (chunk: Buffer) => {
      const speaksLines = chunk[0] === 0x7b || chunk[0] === 0x5b;
      if (refusal) return this.refuseOverCapacity(socket, speaksLines, refusal);
      if (speaksLines) {
        const connection = this.serveLines(socket);
        onDeadline = () => void connection.cutOff(`no complete line within ${limits.handshakeTimeoutMs} ms of connecting`, 'timeout');
        connection.take(chunk);
        return;
      }
      onDeadline = () => void refuseHttp(socket, 408, `no complete WebSocket upgrade within ${limits.handshakeTimeoutMs} ms of connecting\n`);
      socket.pause();
      socket.unshift(chunk);
      this.http.emit('connection', socket);
      socket.resume();
    });
  }

  /**
   * The peer as the kernel and /proc name it now, at accept: later the process could exec something
   * else. undefined (and the socket closed) when the kernel cannot say: the peer is gone already.
   */
  private identify(socket: Socket): Peer | null | undefined {
    if (!this.options.attribution) return null;
    try {
      return identifyPeer(socket);
    } catch (error) {
      log.debug('closed a connection whose peer could not be identified', { error: (error as Error).message });
      socket.destroy();
      return undefined;
    }
  }

  /** Which connection cap, if any, this new socket is over; it is counted either way until it closes. */
  private capRefusal(socket: Socket): CapRefusal | null {
    const { maxConnections, maxConnectionsPerUid } = this.options.limits;
    const overUidCap = this.peerCap.admit(socket);
    if (this.sockets.size > maxConnections) {
      return { reason: `taskhistoryd already serves its limit of ${maxConnections} connections; close some or raise --max-connections`, limit: maxConnections, log: { max_connections: maxConnections } };
    }
    if (overUidCap) {
      const { uid } = overUidCap;
      return {
        reason: `uid ${uid} already holds its limit of ${maxConnectionsPerUid} connections to taskhistoryd; close some or raise --max-connections-per-uid`,
        limit: maxConnectionsPerUid,
        uid,
        log: { uid, max_connections_per_uid: maxConnectionsPerUid },
      };
    }
    return null;
  }

  private refuseOverCapacity(socket: Socket, speaksLines: boolean, refusal: CapRefusal): void {
    const { reason, limit, uid } = refusal;
    if (Date.now() - this.lastRefusalLog > REFUSAL_LOG_INTERVAL_MS) {
      this.lastRefusalLog = Date.now();
      log.warn('refused connections over the limit', refusal.log);
    }
    if (!speaksLines) return refuseHttp(socket, 503, `${reason}\n`);
    const data = { reason, limit, ...(uid !== undefined && { uid }) };
    socket.end(`${JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: ErrorCodes.ConnectionLimit, message: `Connection refused: ${reason}`, data } })}\n`);
    setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref();
  }

  /** The WebSocket handshake: only `/` is served; any target, method or header set gets a 4xx, never a throw. */
  private upgrade(request: IncomingMessage, socket: Socket, head: Buffer): void {
    try {
      const path = requestPath(request.url);
      if (path === null) return refuseHttp(socket, 400, 'the request target must be a path; the WebSocket endpoint is /\n');
      if (path !== '/') return refuseHttp(socket, 404, 'the WebSocket endpoint is /\n');
      this.wss.handleUpgrade(request, socket, head, (ws) => {
        this.handshakeDone.get(socket)?.();
        this.track(new WebSocketConnection(ws, socket, this.bounds(), this.peers.get(socket) ?? null, (text, connection) => this.dispatch(text, connection)));
      });
    } catch (error) {
      log.warn('refused a WebSocket upgrade that could not be handled', { error: (error as Error).message });
      refuseHttp(socket, 400);
    }
  }

  private serveLines(socket: Socket): LineConnection {
    const bounds = { ...this.bounds(), maxMessageBytes: this.options.limits.maxMessageBytes };
    const connection = new LineConnection(socket, bounds, this.peers.get(socket) ?? null, (line, self) => this.dispatch(line, self), () => this.handshakeDone.get(socket)?.());
    this.track(connection);
    return connection;
  }

  private bounds() {
    return { maxOutputBytes: this.options.limits.maxClientOutputBytes, budget: this.budget };
  }

  private track(connection: ClientConnection): void {
    this.connections.add(connection);
    connection.onClose(() => this.connections.delete(connection));
  }

  private dispatch(text: string, connection: Connection): Promise<void> {
    return this.options.onMessage(text, connection).then(
      (answer) => {
        if (answer !== null) connection.send(answer);
      },
      (error) => log.error('a message could not be handled', { error: String(error) }),
    );
  }
}
