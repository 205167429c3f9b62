#!/usr/bin/env -S node --max-semi-space-size=4
// A young generation of 8 MB instead of V8's 32: `taskhistory export` of a 260 MB log peaked at
// 146-148 MB RSS, now 109-111 MB, in the same time. The bench runs it with these flags too.
import { Command, CommanderError } from 'commander';
import { registerExecCommand } from './commands/exec.js';
import { registerInspectCommands } from './commands/inspect.js';
import { registerPullCommand } from './commands/pull.js';
import { registerRecordCommands } from './commands/record.js';
import { registerRedactionCommand } from './commands/redaction.js';
import { registerServiceCommands } from './commands/service.js';
import { registerTailCommand } from './commands/tail.js';
import { registerVerifyCommand } from './commands/verify.js';
import { CliError, ExitCodes, describeError, integerAtLeast } from './commands/context.js';
import { PACKAGE_VERSION } from '../node/package-root.js';
import { DaemonUnreachableError } from './sdk.js';
import { visibleLine } from './visible-text.js';

function buildProgram(): Command {
  const program = new Command('taskhistory')
    .description("log and inspect agents' multi-step tasks in the machine's taskhistoryd audit trail")
    .version(PACKAGE_VERSION)
    .option('--socket <PATH>', "the daemon's socket (default: $TASKHISTORY_SOCKET, then the per-user or system default)")
    .option('--json', 'print JSON for scripts instead of readable text')
    .option('--timeout-ms <MS>', "how long to wait for the daemon's answer to each call (default 10000)", integerAtLeast(1))
    .addHelpText(
      'after',
      '\nExit codes: 0 ok, 1 failure (or a broken chain), 2 usage or unreadable input, 3 no daemon answers.\n' +
        "`exec` exits with the command's own code instead.",
    )
    // Usage errors are reported by main() with exit code 2; help and --version still exit 0.
    .exitOverride()
    .configureOutput({ outputError: (text, write) => write(`taskhistory: ${text.replace(/^error: /, '').trim()}\n`) });
  // Subcommands copy the settings above, so register them after.
  registerInspectCommands(program);
  registerRecordCommands(program);
  registerTailCommand(program);
  registerExecCommand(program);
  registerVerifyCommand(program);
  registerRedactionCommand(program);
  registerPullCommand(program);
  registerServiceCommands(program);
  return program;
}

/** The exit code for an error, after printing it as one line on stderr (commander printed its own). */
function reportError(error: unknown): number {
  if (error instanceof CommanderError) return error.exitCode === 0 ? ExitCodes.ok : ExitCodes.usage;
  const exitCode =
    error instanceof CliError ? error.exitCode : error instanceof DaemonUnreachableError ? ExitCodes.daemonUnreachable : ExitCodes.failure;
  // Messages may quote what the daemon or the cloud said: their control characters are shown, not obeyed.
  process.stderr.write(`taskhistory: ${visibleLine(describeError(error).replace(/\s*\n\s*/g, ' '))}\n`);
  return exitCode;
}

async function main(): Promise<number> {
  try {
    await buildProgram().parseAsync(process.argv);
    return Number(process.exitCode ?? ExitCodes.ok);
  } catch (error) {
    return reportError(error);
  }
}

// A reader that goes away (`taskhistory tail -f | head`) is a normal end, not a crash.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(ExitCodes.ok);
  throw error;
});

// Exit explicitly: a half-closed socket must not keep a finished command alive. stdout and stderr
// are synchronous for files and pipes on Linux, so nothing written is lost.
process.exit(await main());
