import type { Socket } from 'node:net';
import { ErrorCodes, ErrorMessages } from '../protocol/errors.js';
import { ClientConnection, type ClientBounds } from './client-connection.js';
import { LineReader } from './line-reader.js';
import type { Peer } from './peer-identity.js';

/**
 * A newline-delimited JSON-RPC client: one message per line each way. The client may half-close
 * its side and still get every answer; our side ends once they are all out.
 */
export class LineConnection extends ClientConnection {
  readonly kind = 'ndjson';
  private readonly reader: LineReader;
  private clientEnded = false;

  constructor(
    socket: Socket,
    bounds: ClientBounds & { maxMessageBytes: number },
    peer: Peer | null,
    handle: (line: string, connection: LineConnection) => Promise<void>,
    /** Runs at the first complete line: the connection has shown it speaks the protocol. */
    onFirstLine: () => void,
  ) {
    super(socket, bounds, peer);
    let first = true;
    this.reader = new LineReader(
      bounds.maxMessageBytes,
      (line) => {
        if (first) {
          first = false;
          onFirstLine();
        }
        void this.track(handle(line, this)).finally(() => this.endWhenAnswered());
      },
      () => this.send(errorLine(ErrorCodes.PayloadTooLarge, ErrorMessages[ErrorCodes.PayloadTooLarge], { limit: bounds.maxMessageBytes })),
    );
    socket.on('data', (chunk: Buffer) => this.take(chunk));
    socket.once('end', () => {
      this.reader.end();
      this.setInputBytes(0);
      this.clientEnded = true;
      this.endWhenAnswered();
    });
  }

  /** Feeds bytes read before this connection took over the socket (the sniffed first chunk). */
  take(chunk: Buffer): void {
    if (this.finished) return;
    this.reader.push(chunk);
    this.setInputBytes(this.reader.heldBytes);
  }

  protected isOpen(): boolean {
    return !this.socket.destroyed && this.socket.writable;
  }

  protected write(text: string, done: () => void): void {
    this.socket.write(`${text}\n`, done);
  }

  protected farewell(reason: string, cause: string): void {
    this.reader.discard();
    if (!this.socket.writable) return;
    if (cause === 'shutdown') this.socket.end();
    else this.socket.end(`${errorLine(ErrorCodes.ConnectionLimit, `Connection closed: ${reason}`, { reason })}\n`);
  }

  private endWhenAnswered(): void {
    if (this.clientEnded && this.messagesInFlight === 0 && !this.finished) this.socket.end();
  }
}

function errorLine(code: number, message: string, data: unknown): string {
  return JSON.stringify({ jsonrpc: '2.0', id: null, error: { code, message, data } });
}
