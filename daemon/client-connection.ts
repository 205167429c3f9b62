import type { Socket } from 'node:net';
import { log } from '../node/log.js';
import type { BufferBudget, BufferHolder } from './buffer-budget.js';
import type { Peer } from './peer-identity.js';

/** One client, whichever framing it speaks. */
export interface Connection {
  readonly kind: 'websocket' | 'ndjson';
  /** Who connected, read at accept; null when attribution is off (--no-attribution). */
  readonly peer: Peer | null;
  send(text: string): void;
  onClose(listener: () => void): void;
}

export interface ClientBounds {
  /** Answers and events waiting for this client to read; past it the client is cut off. */
  maxOutputBytes: number;
  budget: BufferBudget;
}

/** Written straight to the socket below this much unflushed output; queued (and discardable) above. */
const SOCKET_WATERMARK_BYTES = 64 * 1024;
/** Messages of one connection being handled at once; past it the connection is not read. */
const MAX_IN_FLIGHT = 64;
/** A client cut off gets this long to read its reason (its queue is dropped already) before its socket is destroyed. */
const FAREWELL_MS = 5000;

/**
 * What both framings share: an outbox that holds output above the socket's watermark (so a cut
 * off client gets its reason next, not after megabytes), accounting of every byte held for the
 * client against its own bound and the daemon-wide budget, and backpressure on input while many
 * of its messages are in flight.
 */
export abstract class ClientConnection implements Connection, BufferHolder {
  abstract readonly kind: 'websocket' | 'ndjson';
  private readonly queue: string[] = [];
  private queuedBytes = 0;
  private unflushedBytes = 0;
  private inputBytes = 0;
  private inFlight = 0;
  private readonly closeListeners: (() => void)[] = [];
  /** Set once cut off or closing: nothing more is sent. */
  protected finished = false;

  constructor(
    protected readonly socket: Socket,
    private readonly bounds: ClientBounds,
    readonly peer: Peer | null,
  ) {
    bounds.budget.join(this);
    socket.on('drain', () => this.flush());
    socket.once('close', () => {
      this.release();
      for (const listener of this.closeListeners) listener();
    });
  }

  get heldBytes(): number {
    return this.inputBytes + this.queuedBytes + this.unflushedBytes;
  }

  onClose(listener: () => void): void {
    this.closeListeners.push(listener);
  }

  send(text: string): void {
    if (this.finished || !this.isOpen()) return;
    const bytes = Buffer.byteLength(text);
    const waitingBytes = this.queuedBytes + this.unflushedBytes;
    const outputBytes = waitingBytes + bytes;
    // One message of any size may go out; what piles up behind it is what a stalled reader costs.
    if (waitingBytes > 0 && outputBytes > this.bounds.maxOutputBytes) {
      this.cutOff(`this connection fell behind: ${outputBytes} bytes of answers and events were waiting for it to read (limit ${this.bounds.maxOutputBytes})`, 'behind');
      return;
    }
    this.queue.push(text);
    this.queuedBytes += bytes;
    this.bounds.budget.change(bytes);
    this.flush();
  }

  /** Closes the connection saying why (WebSocket close code, or a last error line). */
  cutOff(reason: string, cause: 'behind' | 'overloaded' | 'timeout'): void {
    if (this.finished) return;
    log.warn('cut off a client', { framing: this.kind, reason });
    this.finished = true;
    this.release();
    this.farewell(reason, cause);
    setTimeout(() => this.socket.destroy(), FAREWELL_MS).unref();
  }

  /** Closes the connection for a shutdown. */
  close(): void {
    if (this.finished) return;
    this.flush(true);
    this.finished = true;
    this.farewell('taskhistoryd is shutting down', 'shutdown');
  }

  /** Counts bytes of input held in memory for this client (an unfinished line or frame). */
  protected setInputBytes(bytes: number): void {
    if (this.finished) return;
    const delta = bytes - this.inputBytes;
    this.inputBytes = bytes;
    if (delta !== 0) this.bounds.budget.change(delta);
  }

  /** Runs the handling of one message, pausing input while too many are in flight. */
  protected track(handling: Promise<unknown>): Promise<unknown> {
    if (++this.inFlight === MAX_IN_FLIGHT) this.socket.pause();
    return handling.finally(() => {
      if (this.inFlight-- === MAX_IN_FLIGHT && !this.finished) this.socket.resume();
    });
  }

  protected get messagesInFlight(): number {
    return this.inFlight;
  }

  protected abstract isOpen(): boolean;
  /** Writes one message; `done` runs once the socket has handed it to the kernel (or failed). */
  protected abstract write(text: string, done: () => void): void;
  protected abstract farewell(reason: string, cause: 'behind' | 'overloaded' | 'timeout' | 'shutdown'): void;

  /** Moves queued output to the socket while it is below its watermark (all of it when `everything`). */
  private flush(everything = false): void {
    while (this.queue.length > 0 && (everything || this.socket.writableLength < SOCKET_WATERMARK_BYTES) && this.isOpen() && !this.finished) {
      const text = this.queue.shift() as string;
      const bytes = Buffer.byteLength(text);
      this.queuedBytes -= bytes;
      this.unflushedBytes += bytes;
      this.write(text, () => {
        if (this.finished) return;
        this.unflushedBytes -= bytes;
        this.bounds.budget.change(-bytes);
      });
    }
  }

  /** Gives back every byte this connection held to the budget, once. */
  private release(): void {
    const held = this.heldBytes;
    this.queue.length = 0;
    this.queuedBytes = 0;
    this.unflushedBytes = 0;
    this.inputBytes = 0;
    this.bounds.budget.leave(this);
    if (held !== 0) this.bounds.budget.change(-held);
  }
}
