import { connect, type Socket } from 'node:net';

/** A raw connection: write text, read whole `\n`-terminated lines as parsed JSON. */
export class LineClient {
  private buffer = '';
  private readonly lines: unknown[] = [];
  private waiter: ((line: unknown) => void) | null = null;
  closed = false;

  private constructor(readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      for (let end = this.buffer.indexOf('\n'); end !== -1; end = this.buffer.indexOf('\n')) {
        const line = JSON.parse(this.buffer.slice(0, end));
        this.buffer = this.buffer.slice(end + 1);
        const waiter = this.waiter;
        this.waiter = null;
        if (waiter) waiter(line);
        else this.lines.push(line);
      }
    });
    socket.on('close', () => (this.closed = true));
  }

  static open(socketPath: string): Promise<LineClient> {
    return new Promise((resolve, reject) => {
      const socket = connect(socketPath);
      socket.once('connect', () => resolve(new LineClient(socket)));
      socket.once('error', reject);
    });
  }

  write(text: string): void {
    this.socket.write(text);
  }

  /** The next line from the daemon. */
  next(timeoutMs = 5000): Promise<any> {
    if (this.lines.length) return Promise.resolve(this.lines.shift());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new Error(`no line within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = (line) => {
        clearTimeout(timer);
        resolve(line);
      };
    });
  }

  /** Every line that arrives until none has for `quietMs`. */
  async drain(quietMs: number): Promise<any[]> {
    const lines: unknown[] = [];
    for (;;) {
      try {
        lines.push(await this.next(quietMs));
      } catch {
        return lines;
      }
    }
  }

  /** Writes one line and returns the next line read. */
  async exchange(line: string): Promise<any> {
    this.write(`${line}\n`);
    return this.next();
  }

  close(): void {
    this.socket.destroy();
  }
}
