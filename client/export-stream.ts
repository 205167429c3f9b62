import { once } from 'node:events';
import type { Writable } from 'node:stream';
import type { TaskDictPage } from '../protocol/methods.js';
import type { TaskView } from '../protocol/task-view.js';

/**
 * Writes the to_dict document `{"tasks":[…],"count":N,"max_tasks":M}` as its pages arrive: each
 * task's head as soon as it comes, then its steps, one a line, also across the pages a large task
 * is split over. Memory stays bounded by one page however large the log; a slow reader holds the
 * next page back (each page waits for `drain`). An export cut off by an error lacks its closing
 * bracket, so it is never taken for a whole log.
 */
export async function writeTaskDict(pages: AsyncIterable<TaskDictPage>, out: Writable): Promise<void> {
  let openTaskId: string | null = null;
  let tasksWritten = 0;
  let stepsWritten = 0;
  let last: TaskDictPage | undefined;
  await write(out, '{"tasks":[');
  for await (const page of pages) {
    let text = '';
    for (const fragment of page.tasks) {
      if (fragment.task_id !== openTaskId) {
        if (openTaskId !== null) text += '\n]}';
        text += `${tasksWritten > 0 ? ',' : ''}\n${openedTask(fragment)}`;
        openTaskId = fragment.task_id;
        tasksWritten++;
        stepsWritten = 0;
      }
      for (const step of fragment.steps) text += `${stepsWritten++ > 0 ? ',' : ''}\n${JSON.stringify(step)}`;
    }
    await write(out, text);
    last = page;
  }
  const { count, max_tasks } = last as TaskDictPage;
  await write(out, `${openTaskId !== null ? '\n]}' : ''}\n],"count":${JSON.stringify(count)},"max_tasks":${JSON.stringify(max_tasks)}}\n`);
}

/** A task's JSON up to its open steps array, `steps` last. */
function openedTask(task: TaskView): string {
  const { steps: _steps, ...head } = task;
  return `${JSON.stringify(head).slice(0, -1)},"steps":[`;
}

async function write(out: Writable, text: string): Promise<void> {
  if (text && !out.write(text)) await once(out, 'drain');
}
