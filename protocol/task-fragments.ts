import type { StepView, TaskView } from './task-view.js';

/**
 * Appends the tasks of one page to those assembled so far: a first entry with the task_id of the
 * last one assembled is the rest of that task (same head), so its steps are added to it.
 */
export function appendTaskFragments(assembled: TaskView[], fragments: readonly TaskView[]): void {
  for (const fragment of fragments) {
    const last = assembled[assembled.length - 1];
    if (last !== undefined && last.task_id === fragment.task_id) {
      for (const step of fragment.steps) last.steps.push(step); // a loop: a spread of a long page could overflow the stack
    } else assembled.push({ ...fragment, steps: [...fragment.steps] });
  }
}

/** A task head and its steps as one task object, `steps` where the original model has it (after `planned_steps`). */
export function taskWithSteps(head: Omit<TaskView, 'steps'>, steps: StepView[]): TaskView {
  const task: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(head)) {
    task[key] = value;
    if (key === 'planned_steps') task.steps = steps;
  }
  task.steps ??= steps;
  return task as unknown as TaskView;
}
