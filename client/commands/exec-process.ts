import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { performance } from 'node:perf_hooks';
import { DEFAULT_FIELD_CAP_BYTES } from '../../protocol/limits.js';

/** What running one command produced, in the shape its logged step needs. */
export interface CommandRun {
  /** Unix seconds. */
  started_at: number;
  duration_ms: number;
  /** The command's exit code; 128 + signal number when a signal killed it; 127/126 when it could not start. */
  exit_code: number;
  stdout: string;
  stderr: string;
  /** Set when the command could not be started at all. */
  spawnError?: string;
}

/**
 * Keeps the last bytes of a stream within `capBytes`, marker included, so the daemon's own cap
 * (which keeps the head) never cuts it again: the end of a log is where the failure is.
 */
export class TailCapture {
  private chunks: Buffer[] = [];
  private kept = 0;
  private total = 0;

  constructor(private readonly capBytes = DEFAULT_FIELD_CAP_BYTES) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.kept += chunk.length;
    this.total += chunk.length;
    while (this.chunks.length > 1 && this.kept - this.chunks[0].length >= this.capBytes) {
      this.kept -= this.chunks.shift()!.length;
    }
  }

  text(): string {
    const all = Buffer.concat(this.chunks);
    if (this.total <= this.capBytes) return all.toString('utf8');
    const marker = `[taskhistory exec: kept the last part of ${this.total} bytes]\n`;
    let start = all.length - (this.capBytes - Buffer.byteLength(marker));
    while (start < all.length && (all[start] & 0xc0) === 0x80) start++; // not inside a UTF-8 character
    return marker + all.subarray(start).toString('utf8');
  }
}

const PLAIN_WORD = /^[A-Za-z0-9_\-+=.,/:@%^]+$/;

/** The words as a POSIX shell would need them typed, so the logged command line can be re-run. */
export function shellQuote(words: string[]): string {
  return words.map((word) => (PLAIN_WORD.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/** Signals the CLI passes on to the command; SIGINT from a terminal already reaches its whole process group. */
const FORWARDED_SIGNALS = ['SIGTERM', 'SIGHUP'] as const;

/**
 * Runs argv[0] with argv[1..] (no shell): stdin inherited, stdout and stderr passed through to ours
 * as they come and captured (tails, capped).
 */
export function runTeed(argv: string[]): Promise<CommandRun> {
  const [file, ...args] = argv;
  const started_at = Date.now() / 1000;
  const startedMs = performance.now();
  const stdout = new TailCapture();
  const stderr = new TailCapture();
  const child = spawn(file, args, { stdio: ['inherit', 'pipe', 'pipe'] });
  const ignoreInterrupt = () => undefined;
  const forward = (signal: NodeJS.Signals) => child.kill(signal);
  process.on('SIGINT', ignoreInterrupt);
  for (const signal of FORWARDED_SIGNALS) process.on(signal, forward);
  const ignoreBrokenPipe = () => undefined; // a reader of ours gone must not kill the command
  process.stdout.on('error', ignoreBrokenPipe);
  process.stderr.on('error', ignoreBrokenPipe);
  child.stdout.on('data', (chunk: Buffer) => {
    process.stdout.write(chunk);
    stdout.push(chunk);
  });
  child.stderr.on('data', (chunk: Buffer) => {
    process.stderr.write(chunk);
    stderr.push(chunk);
  });

  return new Promise((resolve) => {
    let settled = false;
    const finish = (exit_code: number, spawnError?: string) => {
      if (settled) return;
      settled = true;
      process.off('SIGINT', ignoreInterrupt);
      for (const signal of FORWARDED_SIGNALS) process.off(signal, forward);
      process.stdout.off('error', ignoreBrokenPipe);
      process.stderr.off('error', ignoreBrokenPipe);
      const duration_ms = Math.round((performance.now() - startedMs) * 1000) / 1000;
      resolve({ started_at, duration_ms, exit_code, stdout: stdout.text(), stderr: stderr.text(), ...(spawnError && { spawnError }) });
    };
    child.once('error', (error: NodeJS.ErrnoException) => {
      if (child.pid !== undefined) return; // started; 'close' reports how it ended
      const reason = error.code === 'ENOENT' ? 'command not found' : 'cannot execute';
      finish(error.code === 'ENOENT' ? 127 : 126, `cannot run '${file}': ${reason} (${error.code ?? error.message})`);
    });
    child.once('close', (code, signal) => finish(signal ? 128 + (constants.signals[signal] ?? 0) : (code ?? 1)));
  });
}
