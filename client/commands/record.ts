import { Option, type Command } from 'commander';
import { FINAL_STATUSES, STEP_STATUSES, TASK_MODES } from '../../protocol/records.js';
import { CliError, ExitCodes, integerAtLeast, nonNegativeNumber, printResult, withClient } from './context.js';

interface CreateOptions {
  description: string;
  mode: (typeof TASK_MODES)[number];
  steps?: string;
  step?: string[];
  agent?: string;
}

interface StepOptions {
  num: number;
  command: string;
  status: (typeof STEP_STATUSES)[number];
  output?: string;
  error?: string;
  recovery?: string;
  exitCode?: number;
  durationMs?: number;
  startedAt?: number;
}

/** The planned steps from --steps JSON or repeated --step; a bad value is a usage error. */
function plannedSteps(options: CreateOptions): unknown[] {
  if (options.steps !== undefined && options.step !== undefined) {
    throw new CliError(ExitCodes.usage, 'create: give either --steps JSON or --step TEXT, not both');
  }
  if (options.step !== undefined) return options.step.map((command) => ({ command }));
  if (options.steps === undefined) return [];
  let steps: unknown;
  try {
    steps = JSON.parse(options.steps);
  } catch (error) {
    throw new CliError(ExitCodes.usage, `create: --steps is not valid JSON: ${(error as Error).message}`);
  }
  if (!Array.isArray(steps)) throw new CliError(ExitCodes.usage, 'create: --steps must be a JSON array of planned steps');
  return steps;
}

/** Commands that append to the log, so shell agents can log without code: create, step, complete. */
export function registerRecordCommands(program: Command): void {
  program
    .command('create')
    .description('start a task and print its task_id alone (for $(taskhistory create ...))')
    .requiredOption('--description <text>', 'what the task is for')
    .addOption(new Option('--mode <mode>', 'how the agent runs it').choices(TASK_MODES).makeOptionMandatory())
    .option('--steps <json>', 'the plan as a JSON array of any objects')
    .option('--step <text>', 'one planned command, stored as {"command": TEXT} (repeatable)', (text, all: string[] = []) => [...all, text])
    .option('--agent <name>', 'who is running the task')
    .action((options: CreateOptions, command: Command) => {
      const steps = plannedSteps(options);
      return withClient(command, async (client) => {
        const created = await client.createTask({
          description: options.description,
          mode: options.mode,
          steps,
          ...(options.agent !== undefined && { agent: options.agent }),
        });
        printResult(command, created, ({ task_id }) => task_id);
      });
    });

  program
    .command('step')
    .description("log one step of a task and print the record's seq")
    .argument('<TASK_ID>')
    .requiredOption('--num <N>', 'the step number, from 1', integerAtLeast(1))
    .requiredOption('--command <text>', 'what was run')
    .addOption(new Option('--status <status>', 'how it went').choices(STEP_STATUSES).makeOptionMandatory())
    .option('--output <text>', 'what it printed')
    .option('--error <text>', 'what went wrong')
    .option('--recovery <text>', 'what was done about it')
    .option('--exit-code <code>', 'its exit code', integerAtLeast())
    .option('--duration-ms <ms>', 'how long it ran', nonNegativeNumber)
    .option('--started-at <unix-seconds>', 'when it started', nonNegativeNumber)
    .action((taskId: string, options: StepOptions, command: Command) =>
      withClient(command, async (client) => {
        const logged = await client.logStep({
          task_id: taskId,
          step_num: options.num,
          command: options.command,
          status: options.status,
          output: options.output,
          error: options.error,
          recovery: options.recovery,
          started_at: options.startedAt,
          duration_ms: options.durationMs,
          exit_code: options.exitCode,
        });
        printResult(command, logged, ({ seq }) => `seq ${seq}`);
      }),
    );

  program
    .command('complete')
    .description("finish a task and print the record's seq")
    .argument('<TASK_ID>')
    .addOption(new Option('--status <status>', 'the final status').choices(FINAL_STATUSES).makeOptionMandatory())
    .action((taskId: string, options: { status: (typeof FINAL_STATUSES)[number] }, command: Command) =>
      withClient(command, async (client) => {
        const completed = await client.completeTask({ task_id: taskId, final_status: options.status });
        printResult(command, completed, ({ seq }) => `seq ${seq}`);
      }),
    );
}
