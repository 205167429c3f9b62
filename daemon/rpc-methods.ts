import { ErrorCodes, RpcError } from '../protocol/errors.js';
import { Methods, type CloudStatus, type StatusResult } from '../protocol/methods.js';
import { DEFAULT_RECENT_COUNT } from '../protocol/limits.js';
import { redactionRuleInfo, BUILTIN_REDACTION_RULES } from '../protocol/redaction.js';
import type { RecordBuilder } from './record-builder.js';
import pLimit from 'p-limit';
import type { RpcDispatcher } from '../node/rpc-dispatch.js';
import type { Connection } from './client-connection.js';
import { writerOf } from './peer-identity.js';
import type { TaskStore } from './store.js';
import type { SubscriptionHub } from './subscriptions.js';
import type { TamperWatch } from './tamper-watch.js';
import type { TaskAccess, Viewer } from './task-access.js';
import { TaskPager, type PagerOptions } from './task-pages.js';
import type { TaskSource } from './task-source.js';
import { VisibleTaskSource } from './visible-task-source.js';

export interface MethodContext {
  connection: Connection;
}

export interface DaemonParts {
  version: string;
  socketPath: string;
  dataFile: string;
  startedAt: number;
  store: TaskStore;
  /** The kept tasks as the pager reads them. */
  taskSource: TaskSource;
  /** No answer is larger than this (--max-message-bytes). */
  maxMessageBytes: number;
  builder: RecordBuilder;
  subscriptions: SubscriptionHub;
  /** Which tasks each caller sees and may write. */
  access: TaskAccess;
  tamper: TamperWatch;
  cloudStatus(): CloudStatus;
}

/** The daemon's methods: the original TaskHistory model, plus status, subscriptions and verify. */
export function registerMethods(rpc: RpcDispatcher<MethodContext>, parts: DaemonParts): void {
  const { store, subscriptions } = parts;
  // Calls that read the whole log run one at a time, so that many of them cannot take the memory
  // and the event loop every client's writes need (verify runs on a worker thread besides).
  const wholeLog = pLimit(1);
  // Answers of tasks never exceed --max-message-bytes: too large one-shot answers are refused (1008), pages are bounded.
  const pagerOptions: PagerOptions = { maxMessageBytes: parts.maxMessageBytes, maxTasks: () => store.maxTasks };
  const wholePager = new TaskPager(parts.taskSource, pagerOptions);
  const viewerOf = (context: MethodContext) => parts.access.viewerOf(context.connection.peer);
  // A caller who may not see every task reads through a filter of its own (cheap: the pager holds no state).
  const pagerFor = (context: MethodContext) => {
    const viewer = viewerOf(context);
    return viewer.seesAll ? wholePager : new TaskPager(new VisibleTaskSource(parts.taskSource, viewer), pagerOptions);
  };
  const writer = (context: MethodContext) => (context.connection.peer ? writerOf(context.connection.peer) : undefined);
  /** Writes only to the caller's own tasks; another's task is refused exactly as a missing one (no oracle). */
  const requireWritable = (taskId: string, context: MethodContext) => {
    const viewer = viewerOf(context);
    if (viewer.seesAll) return;
    const task = store.chain.tasks.get(taskId);
    if (!task || !viewer.sees(task.writer?.uid)) throw new RpcError(ErrorCodes.TaskNotFound, `no task ${taskId}`, { task_id: taskId });
  };
  rpc.register(Methods.createTask, (params, context) => store.createTask(params, writer(context)));
  rpc.register(Methods.logStep, (params, context) => {
    requireWritable(params.task_id, context);
    return store.logStep(params, writer(context));
  });
  rpc.register(Methods.completeTask, (params, context) => {
    requireWritable(params.task_id, context);
    return store.completeTask(params, writer(context));
  });
  rpc.register(Methods.getTask, (params, context) => pagerFor(context).task(params));
  rpc.register(Methods.getRecent, (params, context) => pagerFor(context).recent({ ...params, count: params.count ?? DEFAULT_RECENT_COUNT }));
  rpc.register(Methods.toDict, (params, context) => wholeLog(() => pagerFor(context).toDict(params)));
  rpc.register(Methods.status, (_params, context) => status(parts, viewerOf(context)));
  rpc.register(Methods.subscribe, (params, context) => ({ subscription: subscriptions.subscribe(context.connection, viewerOf(context), params.task_id) }));
  rpc.register(Methods.unsubscribe, (params, context) => {
    if (!subscriptions.unsubscribe(context.connection, params.subscription)) {
      throw new RpcError(ErrorCodes.SubscriptionNotFound, `no subscription ${params.subscription} on this connection`);
    }
    return { unsubscribed: true };
  });
  rpc.register(Methods.verify, () => wholeLog(() => store.verifyOnDisk()));
  rpc.register(Methods.redactionRules, () => ({
    enabled: parts.builder.redaction.enabled,
    rules: redactionRuleInfo([...BUILTIN_REDACTION_RULES, ...parts.builder.redaction.rules.filter((rule) => rule.source === 'config')]),
  }));
}

/** The daemon's whole counts and chain head, and the caller's own counts; `running` lists only the caller's tasks. */
function status(parts: DaemonParts, viewer: Viewer): StatusResult {
  const { store, tamper } = parts;
  const now = Date.now() / 1000;
  const running = store.runningTasks;
  const head = store.head;
  const ownTasks = viewer.seesAll ? store.tasks : store.tasks.filter((task) => viewer.sees(task.writer?.uid));
  const ownRunning = ownTasks.filter((task) => task.status === 'running');
  return {
    version: parts.version,
    pid: process.pid,
    machine_id: store.machineId,
    socket: parts.socketPath,
    data_file: parts.dataFile,
    tasks: store.taskCount,
    running_tasks: running.length,
    running: ownRunning.map((task) => ({
      task_id: task.task_id,
      description: task.description,
      ...(task.agent !== undefined && { agent: task.agent }),
      steps: task.stepSeqs.length,
      age_s: Math.round((now - task.timestamp) * 10) / 10,
    })),
    max_tasks: store.maxTasks,
    last_seq: head.seq,
    head_hash: head.hash,
    caller: { uid: viewer.uid, sees: viewer.seesAll ? 'all' : 'own', tasks: ownTasks.length, running_tasks: ownRunning.length },
    checkpoint_seq: store.checkpointSeq,
    uptime_s: Math.round((Date.now() - parts.startedAt) / 100) / 10,
    redaction: parts.builder.redaction.enabled,
    storage_error: store.storageError,
    tamper: { count: tamper.count, last: tamper.last },
    cloud: parts.cloudStatus(),
  };
}
