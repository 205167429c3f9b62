import { randomUUID } from 'node:crypto';
import { closeSync, fsyncSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCodes } from '../../protocol/errors.js';
import type { CompleteTaskInput, CreateTaskInput, LogStepInput } from '../../protocol/methods.js';
import type { StepView, TaskView } from '../../protocol/task-view.js';
import { PeerRefusal, unixSeconds, type PeerStore } from './store.js';

/**
 * The original model's way: the task dict in memory, oldest tasks dropped past max_tasks, and the
 * whole `to_dict()` rewritten to one JSON file on every change; with or without an fsync after.
 */
export class JsonRewriteStore implements PeerStore {
  private readonly tasks = new Map<string, TaskView>();
  private readonly file: string;
  private seq = 0;
  private suspended = false;

  constructor(
    dataDir: string,
    private readonly maxTasks: number,
    private readonly fsync: boolean,
  ) {
    this.file = join(dataDir, 'task_history.json');
  }

  createTask(params: CreateTaskInput): { task_id: string; seq: number } {
    const task: TaskView = {
      task_id: randomUUID(),
      timestamp: unixSeconds(),
      description: params.description,
      mode: params.mode,
      planned_steps: params.steps.length,
      steps: [],
      status: 'running',
      machine_id: 'bench',
      ...(params.agent !== undefined && { agent: params.agent }),
      plan: params.steps,
      seq: ++this.seq,
    };
    this.tasks.set(task.task_id, task);
    for (const oldest of this.tasks.keys()) {
      if (this.tasks.size <= this.maxTasks) break;
      this.tasks.delete(oldest);
    }
    this.rewrite();
    return { task_id: task.task_id, seq: task.seq };
  }

  logStep(params: LogStepInput): { seq: number } {
    const { task_id, step_num, ...rest } = params;
    const task = this.runningTask(task_id);
    const step: StepView = { step: step_num, ...rest, timestamp: unixSeconds(), seq: ++this.seq };
    task.steps.push(step);
    this.rewrite();
    return { seq: step.seq };
  }

  completeTask(params: CompleteTaskInput): { seq: number } {
    const task = this.runningTask(params.task_id);
    task.status = params.final_status;
    task.completed_at = unixSeconds();
    this.rewrite();
    return { seq: ++this.seq };
  }

  bulk(writes: () => void): void {
    this.suspended = true;
    try {
      writes();
    } finally {
      this.suspended = false;
    }
    this.rewrite();
  }

  close(): void {}

  private runningTask(taskId: string): TaskView {
    const task = this.tasks.get(taskId);
    if (!task) throw new PeerRefusal(ErrorCodes.TaskNotFound, `no task ${taskId}`);
    if (task.status !== 'running') throw new PeerRefusal(ErrorCodes.TaskFinished, `task ${taskId} is ${task.status}`);
    return task;
  }

  private rewrite(): void {
    if (this.suspended) return;
    const tasks = [...this.tasks.values()];
    const text = JSON.stringify({ tasks, count: tasks.length, max_tasks: this.maxTasks });
    if (!this.fsync) {
      writeFileSync(this.file, text);
      return;
    }
    const fd = openSync(this.file, 'w');
    try {
      writeSync(fd, text);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
}
