import { RpcSocket, type Framing } from './rpc-socket.js';
import { nowMs, summarize, type LatencySummary } from './stats.js';
import { Workload, type TaskPlan } from './workload.js';

/**
 * Load generators. Every producer is its own connection and its own seeded Workload stream, so a run
 * against ours and against a peer sends the same records.
 */
export interface ProducerOptions {
  socketPath: string;
  framing?: Framing;
  producers: number;
  /** Producer i draws from Workload(seedBase + i). */
  seedBase: number;
  outputBytes?: number;
}

interface ProducerCounters {
  records: number;
  outputBytes: number;
}

/**
 * Runs `producers` closed-loop producers (each sends its next request only after the previous answer):
 * create_task, its steps, complete_task, again, until `shouldStop` says so. A task cut short is
 * completed as aborted so the server is left with nothing running.
 */
async function runProducers(
  options: ProducerOptions,
  shouldStop: (counters: ProducerCounters) => boolean,
  onStep: (sentAt: number, answeredAt: number) => void = () => undefined,
): Promise<ProducerCounters> {
  const counters: ProducerCounters = { records: 0, outputBytes: 0 };
  const sockets = await Promise.all(Array.from({ length: options.producers }, () => RpcSocket.open(options.socketPath, options.framing)));
  try {
    await Promise.all(
      sockets.map(async (socket, index) => {
        const workload = new Workload(options.seedBase + index, options.outputBytes);
        while (!shouldStop(counters)) {
          const plan = workload.nextTask();
          const { task_id } = await socket.call<{ task_id: string }>('create_task', plan.create);
          counters.records++;
          let finalStatus: 'completed' | 'aborted' = 'completed';
          for (const step of plan.steps) {
            if (shouldStop(counters)) {
              finalStatus = 'aborted';
              break;
            }
            const paramsJson = JSON.stringify({ task_id, ...step });
            const sentAt = nowMs();
            await socket.callRaw('log_step', paramsJson);
            onStep(sentAt, nowMs());
            counters.records++;
            counters.outputBytes += step.output?.length ?? 0;
          }
          await socket.call('complete_task', { task_id, final_status: finalStatus });
          counters.records++;
        }
      }),
    );
  } finally {
    for (const socket of sockets) socket.close();
  }
  return counters;
}

export interface ThroughputResult {
  steps: number;
  seconds: number;
  stepsPerSecond: number;
  latency: LatencySummary;
  /** Every measured latency, ms, for summaries over several windows. */
  samples: number[];
}

export interface ClosedLoopOptions extends ProducerOptions {
  warmupMs: number;
  durationMs: number;
  /** Keep the window open past durationMs until this many steps were measured (for slow servers). */
  minSteps?: number;
  /** End the window early once this many steps were measured. */
  maxSteps?: number;
  /** Called as the measured window opens and as it closes (e.g. to read a server's CPU time). */
  onWindowEdge?: (edge: 'open' | 'close') => void;
}

/** Closed-loop throughput: steps answered inside the measured window (after a warm-up) per second. */
export async function measureClosedLoop(options: ClosedLoopOptions): Promise<ThroughputResult> {
  const windowStart = nowMs() + options.warmupMs;
  let windowEnd = windowStart + options.durationMs;
  const minSteps = options.minSteps ?? 0;
  const maxSteps = options.maxSteps ?? Infinity;
  const latencies: number[] = [];
  const onWindowEdge = options.onWindowEdge;
  const opening = onWindowEdge && setTimeout(() => onWindowEdge('open'), options.warmupMs);
  let closed = false;
  const windowClosed = () => {
    const done = (nowMs() >= windowEnd && latencies.length >= minSteps) || latencies.length >= maxSteps;
    if (done && !closed) {
      closed = true;
      onWindowEdge?.('close');
    }
    return done;
  };
  await runProducers(
    options,
    windowClosed,
    (sentAt, answeredAt) => {
      if (sentAt < windowStart || latencies.length >= maxSteps) return;
      if (answeredAt > windowEnd) {
        if (latencies.length >= minSteps) return;
        windowEnd = answeredAt;
      }
      latencies.push(answeredAt - sentAt);
      if (latencies.length === maxSteps) windowEnd = answeredAt;
    },
  );
  clearTimeout(opening);
  const seconds = (windowEnd - windowStart) / 1000;
  return { steps: latencies.length, seconds, stepsPerSecond: latencies.length / seconds, latency: summarize(latencies), samples: latencies };
}

/** Several measured windows as one: their steps over their seconds, the latencies of all. */
export function combineWindows(windows: ThroughputResult[]): ThroughputResult {
  const samples = windows.flatMap((window) => window.samples);
  const seconds = windows.reduce((sum, window) => sum + window.seconds, 0);
  return { steps: samples.length, seconds, stepsPerSecond: samples.length / seconds, latency: summarize(samples), samples };
}

/**
 * Bulk loader: keeps producers busy until the steps' outputs add up to `untilOutputBytes`, or
 * `untilRecords` records were written, or `deadlineMs` (a nowMs() time) passed.
 */
export async function fill(
  options: ProducerOptions & { outputBytes: number; untilOutputBytes?: number; untilRecords?: number; deadlineMs?: number },
): Promise<ProducerCounters> {
  return runProducers(
    options,
    (counters) =>
      (options.untilOutputBytes !== undefined && counters.outputBytes >= options.untilOutputBytes) ||
      (options.untilRecords !== undefined && counters.records >= options.untilRecords) ||
      (options.deadlineMs !== undefined && nowMs() >= options.deadlineMs),
  );
}

export interface LongTasksResult {
  steps: number;
  seconds: number;
  stepsPerSecond: number;
  latency: LatencySummary;
}

/**
 * Long tasks: each producer creates one task and logs `stepsEach` steps into it, closed loop,
 * leaving it running. Every step is timed; the figure is all steps over the whole run.
 */
export async function logLongTasks(options: ProducerOptions & { stepsEach: number }): Promise<LongTasksResult> {
  const sockets = await Promise.all(Array.from({ length: options.producers }, () => RpcSocket.open(options.socketPath, options.framing)));
  const latencies: number[] = [];
  const start = nowMs();
  try {
    await Promise.all(
      sockets.map(async (socket, index) => {
        const workload = new Workload(options.seedBase + index, options.outputBytes);
        const plan = workload.nextTask();
        const { task_id } = await socket.call<{ task_id: string }>('create_task', plan.create);
        for (let step = 0; step < options.stepsEach; step++) {
          const template = plan.steps[step % plan.steps.length];
          const paramsJson = JSON.stringify({ task_id, ...template, step_num: step + 1 });
          const sentAt = nowMs();
          await socket.callRaw('log_step', paramsJson);
          latencies.push(nowMs() - sentAt);
        }
      }),
    );
  } finally {
    for (const socket of sockets) socket.close();
  }
  const seconds = (nowMs() - start) / 1000;
  return { steps: latencies.length, seconds, stepsPerSecond: latencies.length / seconds, latency: summarize(latencies) };
}

export interface OpenLoopResult {
  offeredPerSecond: number;
  sent: number;
  answered: number;
  /** Answers per second while the load was offered. */
  achievedPerSecond: number;
  latency: LatencySummary;
  /** Set when the server fell so far behind that sending stopped early. */
  saturated: boolean;
}

export interface OpenLoopOptions {
  socketPath: string;
  ratePerSecond: number;
  durationMs: number;
  connections: number;
  seedBase: number;
  /** Stop offering load once this many steps wait for an answer. */
  maxBacklog: number;
  /** Called with each step's seq as its answer arrives. */
  onCommitted?: (seq: number, answeredAt: number) => void;
}

/**
 * Open loop: log_step requests leave on a fixed schedule whatever the answers do, so queueing in the
 * server shows up as latency instead of slowing the sender. Tasks are created beforehand; each
 * task's steps (and its complete_task, untimed) go over one connection, in order.
 */
export async function measureOpenLoop(options: OpenLoopOptions): Promise<OpenLoopResult> {
  const total = Math.round((options.ratePerSecond * options.durationMs) / 1000);
  const sockets = await Promise.all(Array.from({ length: options.connections }, () => RpcSocket.open(options.socketPath)));
  try {
    const schedule = await prepareSchedule(sockets, options.seedBase, total);
    const latencies: number[] = [];
    let answered = 0;
    let sent = 0;
    let saturated = false;
    const inFlight: Promise<unknown>[] = [];
    const intervalMs = 1000 / options.ratePerSecond;
    const start = nowMs();

    await new Promise<void>((resolve) => {
      const tick = () => {
        const now = nowMs();
        while (sent < total && start + sent * intervalMs <= now) {
          if (sent - answered >= options.maxBacklog) {
            saturated = true;
            resolve();
            return;
          }
          const { socket, paramsJson, completesTask } = schedule[sent++];
          const sentAt = nowMs();
          inFlight.push(
            socket.callRaw('log_step', paramsJson).then((result) => {
              const answeredAt = nowMs();
              answered++;
              latencies.push(answeredAt - sentAt);
              options.onCommitted?.((result as { seq: number }).seq, answeredAt);
            }),
          );
          if (completesTask) inFlight.push(socket.call('complete_task', { task_id: completesTask, final_status: 'completed' }));
        }
        if (sent < total) setTimeout(tick, Math.max(0, start + sent * intervalMs - nowMs()));
        else resolve();
      };
      tick();
    });
    const sendingMs = nowMs() - start;
    const answeredWhileSending = answered;
    await Promise.all(inFlight);
    return {
      offeredPerSecond: options.ratePerSecond,
      sent,
      answered,
      achievedPerSecond: (answeredWhileSending / sendingMs) * 1000,
      latency: summarize(latencies),
      saturated,
    };
  } finally {
    for (const socket of sockets) socket.close();
  }
}

interface ScheduledStep {
  socket: RpcSocket;
  paramsJson: string;
  /** The task to complete right after this step, when it is the task's last. */
  completesTask: string | null;
}

/** Creates the tasks the run needs and serializes every step's params up front, off the clock. */
async function prepareSchedule(sockets: RpcSocket[], seedBase: number, total: number): Promise<ScheduledStep[]> {
  const workload = new Workload(seedBase);
  const plans: TaskPlan[] = [];
  for (let steps = 0; steps < total; steps += workload.stepsPerTask) plans.push(workload.nextTask());
  const taskIds = await Promise.all(
    plans.map((plan, index) => sockets[index % sockets.length].call<{ task_id: string }>('create_task', plan.create).then((r) => r.task_id)),
  );
  const schedule: ScheduledStep[] = [];
  plans.forEach((plan, taskIndex) => {
    plan.steps.forEach((step, stepIndex) => {
      if (schedule.length >= total) return;
      const last = stepIndex === plan.steps.length - 1;
      schedule.push({
        socket: sockets[taskIndex % sockets.length],
        paramsJson: JSON.stringify({ task_id: taskIds[taskIndex], ...step }),
        completesTask: last ? taskIds[taskIndex] : null,
      });
    });
  });
  return schedule;
}
