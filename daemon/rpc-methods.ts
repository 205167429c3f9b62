import { ErrorCodes, RpcError } from '../protocol/errors.js';
import { Methods, type CloudStatus, type StatusResult } from '../protocol/methods.js';
import { DEFAULT_RECENT_COUNT } from '../protocol/limits.js';
import { redactionRuleInfo, BUILTIN_REDACTION_RULES } from '../protocol/redaction.js';
import type { RecordBuilder } from './record-builder.js';
import pLimit from 'p-limit';
import type { RpcDispatcher } from '../node/rpc-dispatch.js';
import type { Connection } from './client-connection.js';
import type { TaskStore } from './store.js';
import type { SubscriptionHub } from './subscriptions.js';
import type { TamperWatch } from './tamper-watch.js';
import { TaskPager } from './task-pages.js';
import type { TaskSource } from './task-source.js';

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
  const pager = new TaskPager(parts.taskSource, { maxMessageBytes: parts.maxMessageBytes, maxTasks: () => store.maxTasks });
  rpc.register(Methods.createTask, (params) => store.createTask(params));
  rpc.register(Methods.logStep, (params) => store.logStep(params));
  rpc.register(Methods.completeTask, (params) => store.completeTask(params));
  rpc.register(Methods.getTask, (params) => pager.task(params));
  rpc.register(Methods.getRecent, (params) => pager.recent({ ...params, count: params.count ?? DEFAULT_RECENT_COUNT }));
  rpc.register(Methods.toDict, (params) => wholeLog(() => pager.toDict(params)));
  rpc.register(Methods.status, () => status(parts));
  rpc.register(Methods.subscribe, (params, context) => ({ subscription: subscriptions.subscribe(context.connection, params.task_id) }));
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

function status(parts: DaemonParts): StatusResult {
  const { store, tamper } = parts;
  const now = Date.now() / 1000;
  const running = store.runningTasks;
  const head = store.head;
  return {
    version: parts.version,
    pid: process.pid,
    machine_id: store.machineId,
    socket: parts.socketPath,
    data_file: parts.dataFile,
    tasks: store.taskCount,
    running_tasks: running.length,
    running: running.map((task) => ({
      task_id: task.task_id,
      description: task.description,
      ...(task.agent !== undefined && { agent: task.agent }),
      steps: task.stepSeqs.length,
      age_s: Math.round((now - task.timestamp) * 10) / 10,
    })),
    max_tasks: store.maxTasks,
    last_seq: head.seq,
    head_hash: head.hash,
    checkpoint_seq: store.checkpointSeq,
    uptime_s: Math.round((Date.now() - parts.startedAt) / 100) / 10,
    redaction: parts.builder.redaction.enabled,
    storage_error: store.storageError,
    tamper: { count: tamper.count, last: tamper.last },
    cloud: parts.cloudStatus(),
  };
}
