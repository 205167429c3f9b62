import { Option, type Command } from 'commander';
import { resolveSocketPath } from '../../protocol/paths.js';
import { TASK_MODES, type TaskMode } from '../../protocol/records.js';
import { TaskHistoryClient } from '../sdk.js';
import { CliError, ExitCodes, describeError, globalOptions, integerAtLeast } from './context.js';
import { runTeed, shellQuote, type CommandRun } from './exec-process.js';
import { currentPathEnvironment } from '../../node/path-environment.js';

interface ExecOptions {
  task?: string;
  step?: number;
  new?: string;
  mode: TaskMode;
}

interface LogTarget {
  client: TaskHistoryClient;
  taskId: string;
  created: boolean;
}

/** Connects (and creates the task for --new) while the command already runs. */
async function openLogTarget(socketPath: string, options: ExecOptions, commandLine: string): Promise<LogTarget> {
  const client = await TaskHistoryClient.connect({ socketPath });
  if (options.new === undefined) return { client, taskId: options.task as string, created: false };
  try {
    const { task_id } = await client.createTask({ description: options.new, mode: options.mode, steps: [{ command: commandLine }] });
    return { client, taskId: task_id, created: true };
  } catch (error) {
    await client.close();
    throw error;
  }
}

/** Logs the run as a step (and completes a --new task); returns what was left unlogged and why, or null. */
async function logRun(target: Promise<LogTarget>, run: CommandRun, options: ExecOptions, commandLine: string, socketPath: string): Promise<string | null> {
  let unlogged = 'nothing was logged';
  try {
    const { client, taskId, created } = await target;
    try {
      if (created) unlogged = `task ${taskId} was created but its step was not logged`;
      const stepNum = options.step ?? (created ? 1 : (await client.getTask(taskId)).steps.length + 1);
      await client.logStep({
        task_id: taskId,
        step_num: stepNum,
        command: commandLine,
        status: run.exit_code === 0 ? 'success' : 'failed',
        output: run.stdout,
        error: run.spawnError ?? run.stderr,
        started_at: run.started_at,
        duration_ms: run.duration_ms,
        exit_code: run.exit_code,
      });
      if (created) {
        unlogged = `the step was logged but task ${taskId} was not completed`;
        await client.completeTask({ task_id: taskId, final_status: run.exit_code === 0 ? 'completed' : 'failed' });
      }
      return null;
    } finally {
      await client.close();
    }
  } catch (error) {
    return `${unlogged}: ${describeError(error, socketPath)}`;
  }
}

async function exec(argv: string[], options: ExecOptions, command: Command): Promise<void> {
  if ((options.task === undefined) === (options.new === undefined)) {
    throw new CliError(ExitCodes.usage, 'exec: give either --task TASK_ID or --new DESCRIPTION');
  }
  if (options.new !== undefined && options.step !== undefined) {
    throw new CliError(ExitCodes.usage, 'exec: --step goes with --task; a --new task has one step');
  }
  const commandLine = shellQuote(argv);
  const socketPath = resolveSocketPath(globalOptions(command).socket, currentPathEnvironment());
  const target = openLogTarget(socketPath, options, commandLine);
  target.catch(() => undefined); // reported after the command has run
  const run = await runTeed(argv);
  if (run.spawnError) process.stderr.write(`taskhistory: exec: ${run.spawnError}\n`);
  const unlogged = await logRun(target, run, options, commandLine, socketPath);
  if (unlogged) process.stderr.write(`taskhistory: exec: ${unlogged}\n`);
  process.exitCode = run.exit_code;
}

export function registerExecCommand(program: Command): void {
  program
    .command('exec')
    .description("run a command, pass its output through, log it as a step, and exit with the command's code")
    .usage('(--task TASK_ID [--step N] | --new DESCRIPTION [--mode M]) -- CMD [ARGS...]')
    .argument('<CMD...>', 'the command and its arguments, after --')
    .option('--task <TASK_ID>', 'log the run as the next step of this task')
    .option('--step <N>', "the step number (default: the task's step count + 1)", integerAtLeast(1))
    .option('--new <description>', 'wrap the run in a new one-step task, completed or failed by the exit code')
    .addOption(new Option('--mode <mode>', 'the mode of a --new task').choices(TASK_MODES).default('autonomous'))
    .action((argv: string[], options: ExecOptions, command: Command) => exec(argv, options, command));
}
