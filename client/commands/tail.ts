import type { Command } from 'commander';
import { MAX_RECENT_COUNT } from '../../protocol/limits.js';
import type { EventParams } from '../../protocol/methods.js';
import type { TaskHistoryClient } from '../sdk.js';
import { formatTailEntry, tailEntriesFromTask, tailEntryFromRecord, type TailEntry } from '../format.js';
import { globalOptions, integerAtLeast, withClient } from './context.js';

interface TailOptions {
  follow?: boolean;
  task?: string;
  lines: number;
}

/** The newest `count` records of the recent tasks (or of one task), oldest first. */
async function recentEntries(client: TaskHistoryClient, options: TailOptions): Promise<TailEntry[]> {
  if (options.lines === 0) return [];
  const tasks = options.task ? [await client.getTask(options.task)] : await client.getRecent(Math.min(options.lines, MAX_RECENT_COUNT));
  const entries = tasks.flatMap(tailEntriesFromTask);
  // A completion rebuilt from a task view has no seq; its time places it.
  entries.sort((a, b) => (a.seq !== null && b.seq !== null ? a.seq - b.seq : a.ts - b.ts));
  return entries.slice(-options.lines);
}

/**
 * Follows the log like `journalctl -f`: subscribes first and holds live events back while the
 * history is printed, so no record falls between the two and none is printed twice.
 */
async function tail(client: TaskHistoryClient, options: TailOptions, json: boolean): Promise<void> {
  const print = (entry: TailEntry) => process.stdout.write(`${json ? JSON.stringify(entry) : formatTailEntry(entry)}\n`);
  const held: EventParams[] = [];
  let live: ((event: EventParams) => void) | null = null;
  if (options.follow) {
    await client.subscribe((event) => (live ? live(event) : held.push(event)), options.task ? { task_id: options.task } : {});
  }
  const history = await recentEntries(client, options);
  history.forEach(print);
  if (!options.follow) return;
  let lastSeq = Math.max(0, ...history.map((entry) => entry.seq ?? 0));
  // Completions rebuilt from task views carry no seq: skip their live twin by task instead.
  const shownCompletions = new Set(history.filter((entry) => entry.type === 'task_completed').map((entry) => entry.task_id));
  live = (event) => {
    if (event.seq <= lastSeq) return;
    if (event.type === 'task_completed' && shownCompletions.has(event.task_id)) return;
    lastSeq = event.seq;
    print(tailEntryFromRecord(event.record));
  };
  held.forEach(live);
  await new Promise<void>((resolve, reject) => {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => resolve());
    client.onClose((error) => reject(error));
  });
}

export function registerTailCommand(program: Command): void {
  program
    .command('tail')
    .description('the newest records, one a line; with -f keep printing new ones as they are committed')
    .option('-f, --follow', 'follow new records live until interrupted')
    .option('--task <TASK_ID>', "only this task's records")
    .option('-n, --lines <N>', 'how many past records to print first', integerAtLeast(0), 10)
    .action((options: TailOptions, command: Command) =>
      withClient(command, (client) => tail(client, options, globalOptions(command).json === true)),
    );
}
