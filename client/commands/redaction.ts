import type { Command } from 'commander';
import { BUILTIN_REDACTION_RULES, redactionRuleInfo } from '../../protocol/redaction.js';
import type { RedactionRuleInfo } from '../../protocol/methods.js';
import { DaemonUnreachableError } from '../sdk.js';
import { formatRedactionRules } from '../format.js';
import { printResult, withClient } from './context.js';

interface RuleList {
  /** null when no daemon answered: whether it redacts is then unknown. */
  enabled: boolean | null;
  rules: RedactionRuleInfo[];
}

/** The daemon's rules, or the built-ins when no daemon answers (said so on stderr). */
async function ruleList(command: Command): Promise<RuleList> {
  try {
    return await withClient(command, (client) => client.redactionRules());
  } catch (error) {
    if (!(error instanceof DaemonUnreachableError)) throw error;
    process.stderr.write(`taskhistory: ${error.message}; listing the built-in rules\n`);
    return { enabled: null, rules: redactionRuleInfo(BUILTIN_REDACTION_RULES) };
  }
}

export function registerRedactionCommand(program: Command): void {
  program
    .command('redaction-rules')
    .description('the secret redaction rules the daemon applies (the built-ins when no daemon answers)')
    .action(async (_options, command: Command) =>
      printResult(command, await ruleList(command), ({ enabled, rules }) => [
        ...(enabled === null ? [] : [`redaction ${enabled ? 'on' : 'off'}`]),
        ...formatRedactionRules(rules),
      ]),
    );
}
