import type { Command } from 'commander';
import type { VerifyReport } from '../../protocol/chain-verify.js';
import { verifyDataFileOnDisk } from '../../node/verify-files.js';
import { formatVerifyReport } from '../format.js';
import { ExitCodes, printResult, withClient } from './context.js';

/** Broken chain: 1; input that could not be read or parsed at all: 2. */
function exitCodeFor(report: VerifyReport): number {
  if (report.ok) return ExitCodes.ok;
  return report.reason === 'unreadable file' ? ExitCodes.usage : ExitCodes.failure;
}

export function registerVerifyCommand(program: Command): void {
  program
    .command('verify')
    .description("recompute the hash chain: the daemon's own log, or FILE (and the journal beside it) with no daemon")
    .argument('[FILE]', 'a task_history.json to check offline')
    .action(async (file: string | undefined, _options, command: Command) => {
      const report = file === undefined ? await withClient(command, (client) => client.verify()) : verifyDataFileOnDisk(file);
      printResult(command, report, formatVerifyReport);
      process.exitCode = exitCodeFor(report);
    });
}
