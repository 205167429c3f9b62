import type { Socket } from 'node:net';
import WebSocket from 'ws';
import { log } from '../node/log.js';
import { ClientConnection, type ClientBounds } from './client-connection.js';
import type { Peer } from './peer-identity.js';

/** Close codes (RFC 6455 7.4.1) for each reason a connection is closed by us. */
const CLOSE_CODES = { behind: 1008, overloaded: 1013, timeout: 1008, shutdown: 1001 } as const;

/** A WebSocket client at `/`: one JSON-RPC message per text frame each way. */
export class WebSocketConnection extends ClientConnection {
  readonly kind = 'websocket';

  constructor(
    private readonly ws: WebSocket,
    socket: Socket,
    bounds: ClientBounds,
    peer: Peer | null,
    handle: (text: string, connection: WebSocketConnection) => Promise<void>,
  ) {
    super(socket, bounds, peer);
    // An oversize or malformed frame emits 'error' (and ws closes with 1009/1002): never fatal.
    ws.on('error', (error) => log.debug('websocket client error', { error: error.message }));
    // Bytes of a frame still arriving are held by ws: count them from the raw socket until the message is whole.
    let arriving = 0;
    socket.on('data', (chunk: Buffer) => this.setInputBytes((arriving += chunk.length)));
    ws.on('message', (data, isBinary) => {
      this.setInputBytes((arriving = 0));
      const text = isBinary ? Buffer.from(data as Buffer).toString('utf8') : data.toString();
      void this.track(handle(text, this));
    });
  }

  protected isOpen(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  protected write(text: string, done: () => void): void {
    this.ws.send(text, done);
  }

  protected farewell(reason: string, cause: keyof typeof CLOSE_CODES): void {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    // A close reason is at most 123 bytes.
    this.ws.close(CLOSE_CODES[cause], Buffer.from(reason).subarray(0, 123).toString());
  }
}
