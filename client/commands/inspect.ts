import type { Command } from 'commander';
import { DEFAULT_RECENT_COUNT, MAX_RECENT_COUNT } from '../../protocol/limits.js';
import { writeTaskDict } from '../export-stream.js';
import { formatStatus, formatTask, formatTaskLine } from '../format.js';
import { integerAtLeast, printResult, withClient } from './context.js';

/** Pages of `export`: small enough that the CLI's memory stays near its baseline, large enough that round trips do not dominate. */
const EXPORT_PAGE_BYTES = 512 * 1024;

/** Commands that read the daemon's state: status, recent, show, export. */
export function registerInspectCommands(program: Command): void {
  program
    .command('status')
    .description("the daemon's version, files, tasks, chain head, tamper and cloud sync state")
    .action((_options, command: Command) =>
      withClient(command, async (client) => printResult(command, await client.status(), formatStatus)),
    );

  program
    .command('recent')
    .description('the newest tasks, oldest first')
    .option('-n, --count <N>', `how many tasks (1 to ${MAX_RECENT_COUNT})`, integerAtLeast(1), DEFAULT_RECENT_COUNT)
    .action((options: { count: number }, command: Command) =>
      withClient(command, async (client) =>
        printResult(command, await client.getRecent(Math.min(options.count, MAX_RECENT_COUNT)), (tasks) =>
          tasks.length === 0 ? 'no tasks' : tasks.map(formatTaskLine),
        ),
      ),
    );

  program
    .command('show')
    .description('one task with its plan and every step')
    .argument('<TASK_ID>')
    .action((taskId: string, _options, command: Command) =>
      withClient(command, async (client) => printResult(command, await client.getTask(taskId), formatTask)),
    );

  program
    .command('export')
    .description("the whole log as the original model's to_dict JSON {tasks, count, max_tasks}, streamed page by page")
    .action((_options, command: Command) => withClient(command, (client) => writeTaskDict(client.toDictPages({ pageBytes: EXPORT_PAGE_BYTES }), process.stdout)));
}
