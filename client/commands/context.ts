import { InvalidArgumentError, type Command } from 'commander';
import { TaskHistoryClient, TaskHistoryError } from '../sdk.js';

/** The CLI's exit codes, documented in the README. */
export const ExitCodes = {
  ok: 0,
  /** The request failed, or what was checked is broken. */
  failure: 1,
  /** Bad arguments or unreadable input. */
  usage: 2,
  daemonUnreachable: 3,
} as const;
export type ExitCode = (typeof ExitCodes)[keyof typeof ExitCodes];

/** An error the CLI reports as `taskhistory: <message>` and exits with `exitCode`. */
export class CliError extends Error {
  constructor(
    readonly exitCode: ExitCode,
    message: string,
  ) {
    super(message);
  }
}

export interface GlobalOptions {
  socket?: string;
  json?: boolean;
  timeoutMs?: number;
}

export function globalOptions(command: Command): GlobalOptions {
  return command.optsWithGlobals<GlobalOptions>();
}

/** Runs `work` with a connected client, closing it afterwards. */
export async function withClient<T>(command: Command, work: (client: TaskHistoryClient) => Promise<T>): Promise<T> {
  const { socket, timeoutMs } = globalOptions(command);
  const client = await TaskHistoryClient.connect({ socketPath: socket, timeoutMs });
  try {
    return await work(client);
  } finally {
    await client.close();
  }
}

export function printLines(lines: string | string[]): void {
  process.stdout.write(`${([] as string[]).concat(lines).join('\n')}\n`);
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Prints JSON with --json, the readable lines otherwise. */
export function printResult<T>(command: Command, value: T, readable: (value: T) => string | string[]): void {
  if (globalOptions(command).json) printJson(value);
  else printLines(readable(value));
}

/** A commander argument parser for integers (>= min when given); a bad value is a usage error. */
export function integerAtLeast(min?: number): (text: string) => number {
  return (text) => {
    const value = Number(text);
    if (!/^-?\d+$/.test(text.trim()) || !Number.isSafeInteger(value) || (min !== undefined && value < min)) {
      throw new InvalidArgumentError(`expected an integer${min === undefined ? '' : ` >= ${min}`}, got '${text}'`);
    }
    return value;
  };
}

/** A commander argument parser for non-negative numbers (durations, timestamps). */
export function nonNegativeNumber(text: string): number {
  const value = Number(text);
  if (text.trim() === '' || !Number.isFinite(value) || value < 0) {
    throw new InvalidArgumentError(`expected a number >= 0, got '${text}'`);
  }
  return value;
}


/** What failed and why, naming the method (and the daemon's socket, when given). */
export function describeError(error: unknown, socketPath?: string): string {
  if (error instanceof TaskHistoryError) {
    const data = error.data === undefined ? '' : `: ${JSON.stringify(error.data).slice(0, 300)}`;
    const where = socketPath ? ` by the daemon on ${socketPath}` : '';
    return `${error.method ?? 'the call'} refused${where}: ${error.message} (code ${error.code})${data}`;
  }
  if (error instanceof Error) return error.message;
  return String(error);
}
