/**
 * The daemon's and the cloud endpoint's log: one line per notable event on stderr, prefixed with its syslog priority (`<3>` error, `<4>`
 * warning, `<6>` info, `<7>` debug) so journald files it at the right level. Fields follow as
 * `key=value`. No line per call unless the level is debug.
 */
export type LogLevel = 'error' | 'warn' | 'info' | 'debug';

const PRIORITY: Record<LogLevel, number> = { error: 3, warn: 4, info: 6, debug: 7 };

let threshold: LogLevel = 'info';

export function setLogLevel(level: LogLevel): void {
  threshold = level;
}

export function parseLogLevel(text: string): LogLevel | null {
  return text in PRIORITY ? (text as LogLevel) : null;
}

function write(level: LogLevel, message: string, fields?: Record<string, unknown>): void {
  if (PRIORITY[level] > PRIORITY[threshold]) return;
  let line = `<${PRIORITY[level]}>${message}`;
  if (fields) {
    for (const [key, value] of Object.entries(fields)) {
      if (value === undefined) continue;
      const text = typeof value === 'string' ? value : JSON.stringify(value);
      line += ` ${key}=${/[\s"]/.test(text) ? JSON.stringify(text) : text}`;
    }
  }
  process.stderr.write(`${line}\n`);
}

export const log = {
  error: (message: string, fields?: Record<string, unknown>) => write('error', message, fields),
  warn: (message: string, fields?: Record<string, unknown>) => write('warn', message, fields),
  info: (message: string, fields?: Record<string, unknown>) => write('info', message, fields),
  debug: (message: string, fields?: Record<string, unknown>) => write('debug', message, fields),
};
export type Logger = typeof log;
