import { STEP_STATUSES, TASK_MODES } from '../protocol/records.js';
import type { CreateTaskInput, LogStepInput } from '../protocol/methods.js';
import { seededRandom } from '../node/seeded-random.js';

/**
 * The seeded, deterministic workload every scenario and every peer is fed: the same seed gives the
 * same tasks, steps and outputs byte for byte, so ours and the peers store the same records.
 */
export const STEPS_PER_TASK = 20;
export const STANDARD_OUTPUT_BYTES = 1024;

const WORDS = [
  'build', 'compile', 'test', 'lint', 'deploy', 'fetch', 'install', 'migrate', 'render', 'resolve',
  'module', 'package', 'error', 'warning', 'passed', 'failed', 'cache', 'hit', 'miss', 'done',
  'src/index.ts', 'dist/main.js', 'node_modules', 'tsconfig.json', 'ok', 'skipped', 'took', 'ms',
];
const COMMANDS = ['npm run build', 'npm test', 'git status', 'tsc -p .', 'eslint src', 'ls -la', 'cat package.json', 'make check'];

/** Text of exactly `bytes` ASCII bytes: words and line breaks, like a command's output. */
export function outputText(random: () => number, bytes: number): string {
  let text = '';
  while (text.length < bytes) {
    text += WORDS[Math.floor(random() * WORDS.length)];
    text += random() < 0.12 ? '\n' : ' ';
  }
  return text.slice(0, bytes);
}

export interface TaskPlan {
  create: CreateTaskInput;
  /** log_step params without task_id, which is known only once the task exists. */
  steps: Omit<LogStepInput, 'task_id'>[];
}

/**
 * One producer's stream of tasks. Outputs are drawn from a pool made once per stream and prefixed
 * with the step's identity, so each output is distinct while generating them costs the load
 * generator almost nothing.
 */
export class Workload {
  private readonly random: () => number;
  private readonly outputPool: string[];
  private taskCount = 0;

  constructor(
    readonly seed: number,
    readonly outputBytes = STANDARD_OUTPUT_BYTES,
    readonly stepsPerTask = STEPS_PER_TASK,
  ) {
    this.random = seededRandom(seed);
    this.outputPool = Array.from({ length: 32 }, () => outputText(this.random, outputBytes));
  }

  nextTask(): TaskPlan {
    const taskNumber = ++this.taskCount;
    const commands = Array.from({ length: this.stepsPerTask }, () => this.pick(COMMANDS));
    const steps = commands.map((command, index) => {
      const status = this.random() < 0.05 ? STEP_STATUSES[1] : STEP_STATUSES[0];
      const prefix = `[${this.seed}/${taskNumber}/${index + 1}] `;
      const output = prefix + this.pick(this.outputPool).slice(prefix.length);
      return {
        step_num: index + 1,
        command,
        status,
        output,
        ...(status === 'failed' && { error: `${command} exited with status 1`, recovery: 'retried with a clean cache' }),
        started_at: 1_700_000_000 + taskNumber * 60 + index,
        duration_ms: Math.floor(this.random() * 5000),
        exit_code: status === 'failed' ? 1 : 0,
      };
    });
    return {
      create: {
        description: `bench producer ${this.seed} task ${taskNumber}: ${this.pick(WORDS)} ${this.pick(WORDS)}`,
        mode: this.pick(TASK_MODES),
        steps: commands,
        agent: `bench-agent-${this.seed}`,
      },
      steps,
    };
  }

  private pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.random() * items.length)];
  }
}
