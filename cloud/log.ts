/**
 * The endpoint's log lines on stderr, in the daemon's format: `<priority>message key=value`, the
 * syslog priority first so journald files each line at its level.
 */
type LogLevel = 'error' | 'warn' | 'info';

const PRIORITY: Record<LogLevel, number> = { error: 3, warn: 4, info: 6 };

function write(level: LogLevel, message: string, fields?: Record<string, unknown>): void {
  let line = `<${PRIORITY[level]}>${message}`;
  for (const [key, value] of Object.entries(fields ?? {})) {
    if (value === undefined) continue;
    const text = typeof value === 'string' ? value : JSON.stringify(value);
    line += ` ${key}=${/[\s"]/.test(text) ? JSON.stringify(text) : text}`;
  }
  process.stderr.write(`${line}\n`);
}

export const log = {
  error: (message: string, fields?: Record<string, unknown>) => write('error', message, fields),
  warn: (message: string, fields?: Record<string, unknown>) => write('warn', message, fields),
  info: (message: string, fields?: Record<string, unknown>) => write('info', message, fields),
};
