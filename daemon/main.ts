#!/usr/bin/env -S node --max-semi-space-size=2 --heap-growing-percent=25
// A young generation of 4 MB instead of V8's 32 (the verify worker's too: the flag holds for every
// isolate of the process): peak RSS during scenario 1 of npm run bench was 92-94 MB, against 99-101
// with 8 MB and about 20 MB more with V8's default, at the same steps/s. An old generation let grow
// by 25 % between full collections instead of up to 4x: logging 1,000,000 steps peaked at 161 MB RSS
// instead of 217 (the heap swung 27-86 MB, now 20-28), at the same steps/s. The bench runs it with these flags too.
import { mkdirSync } from 'node:fs';
import { CommanderError } from 'commander';
import { ErrorCodes, RpcError } from '../protocol/errors.js';
import { BUILTIN_REDACTION_RULES } from '../protocol/redaction.js';
import { CloudConnection } from './cloud-connection.js';
import { CloudSync, disabledCloudStatus } from './cloud-sync-loop.js';
import { readSecretLine } from '../node/secret-file.js';
import { restoreFromCloud } from './cloud-restore.js';
import { existingHistory, removeStrayTempFiles } from './data-dir.js';
import { DataDirInUse, lockDataDir } from './data-dir-lock.js';
import type { Lifecycle } from './lifecycle.js';
import { log, setLogLevel } from '../node/log.js';
import { requireGroup } from '../node/account-lookup.js';
import { nativeAddon, NativeAddonUnavailable } from '../node/native.js';
import { PACKAGE_VERSION } from '../node/package-root.js';
import { daemonWriter } from './peer-identity.js';
import { TaskAccess } from './task-access.js';
import { resolveMachineId } from './machine-id.js';
import { RecordBuilder, type FieldCaps, type RedactionSettings } from './record-builder.js';
import { RpcDispatcher } from '../node/rpc-dispatch.js';
import { registerMethods, type MethodContext } from './rpc-methods.js';
import { batchLimitsOf, connectionLimitsOf, daemonCommand, resolveSettings, SettingsError, type Settings } from './settings.js';
import { SocketInUse, SocketServer } from './socket-server.js';
import { StoreDamaged, TaskStore } from './store.js';
import { StoredTaskSource } from './stored-task-source.js';
import { socketAccepts } from '../node/socket-probe.js';
import { SubscriptionHub } from './subscriptions.js';
import { inheritedListenFd, notifySystemd, startWatchdog } from './systemd.js';
import { TamperWatch } from './tamper-watch.js';

/** Past this, a stop that is still draining exits anyway (systemd's TimeoutStopSec is larger). */
const STOP_DEADLINE_MS = 8000;

/** Exit codes: 0 stopped cleanly, 1 could not run (damaged data, socket in use, ...), 2 bad usage or settings. */
class StartupFailure extends Error {
  constructor(
    message: string,
    readonly exitCode: 1 | 2,
  ) {
    super(message);
  }
}

function capsOf(settings: Settings): FieldCaps {
  return {
    fieldBytes: settings.fieldCapBytes,
    descriptionBytes: settings.descriptionCapBytes,
    commandBytes: settings.commandCapBytes,
    planBytes: settings.planCapBytes,
  };
}

function redactionOf(settings: Settings): RedactionSettings {
  return { enabled: settings.redact, rules: [...BUILTIN_REDACTION_RULES, ...settings.redactionRules] };
}

/** A part that failed to start: its message for the user. */
function startupMessage(part: string, error: unknown, settings: Settings): StartupFailure {
  if (error instanceof StoreDamaged) {
    const advice = error.advice ?? 'The file was left untouched. To recover: restore it from the cloud (move the data dir aside and start with --restore), or move the file aside to start a new history';
    return new StartupFailure(`${error.message}. ${advice}. See README, "Recovering a damaged data file".`, 1);
  }
  if (error instanceof SocketInUse) return new StartupFailure(error.message, 1);
  const code = (error as NodeJS.ErrnoException).code ?? String(error);
  if (part === 'store') return new StartupFailure(`cannot open the data dir ${settings.dataDir}: ${code}`, 1);
  if (part === 'socket server') return new StartupFailure(`cannot listen on ${settings.socketPath}: ${code}`, 1);
  return new StartupFailure(`cannot start the ${part}: ${code}`, 1);
}

/**
 * Attribution (writers, per-user views) needs SO_PEERCRED from the native addon: without it the
 * daemon must not start quietly unattributed, unless told to with --no-attribution.
 */
function requireAttribution(settings: Settings): void {
  if (!settings.attribution) {
    if (settings.socketGroup !== undefined) log.warn('attribution is off: records name no writer and every member of the socket group sees and writes every task', { socket_group: settings.socketGroup });
    return;
  }
  try {
    nativeAddon();
  } catch (error) {
    if (!(error instanceof NativeAddonUnavailable)) throw error;
    throw new StartupFailure(`${error.message}. Every record names its writer, read through that addon; to run without writers (and without per-user views) start with --no-attribution`, 1);
  }
}

/** The gid of --admin-group, whose members see every task; null without one. */
function adminGroupId(settings: Settings): number | null {
  if (settings.adminGroup === undefined) return null;
  try {
    return requireGroup(settings.adminGroup, 'admin group', '--admin-group').id;
  } catch (error) {
    throw new StartupFailure((error as Error).message, 2);
  }
}

function parseFlags(argv: string[]): Record<string, unknown> {
  const program = daemonCommand(PACKAGE_VERSION);
  try {
    program.parse(argv);
  } catch (error) {
    if (error instanceof CommanderError) process.exit(error.exitCode === 0 ? 0 : 2);
    throw error;
  }
  return program.opts();
}

async function start(flags: Record<string, unknown>): Promise<void> {
  let settings: Settings;
  try {
    settings = resolveSettings(flags);
  } catch (error) {
    if (error instanceof SettingsError) throw new StartupFailure(error.message, 2);
    throw error;
  }
  setLogLevel(settings.logLevel);
  requireAttribution(settings);
  const adminGid = adminGroupId(settings);
  const listenFd = inheritedListenFd();
  // Before the data dir is touched: a daemon already serving this socket leaves it as it is.
  if (listenFd === null && (await socketAccepts(settings.socketPath))) {
    throw new StartupFailure(`another taskhistoryd is already serving on ${settings.socketPath}; stop it first or pass another --socket`, 1);
  }
  mkdirSync(settings.dataDir, { recursive: true, mode: 0o700 });
  try {
    releaseDataDir = lockDataDir(settings.dataDir);
  } catch (error) {
    if (error instanceof DataDirInUse) throw new StartupFailure(error.message, 1);
    throw new StartupFailure(`cannot lock the data dir ${settings.dataDir}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, 1);
  }
  removeStrayTempFiles(settings.dataDir);
  const machineId = resolveMachineId(settings.machineId, settings.dataDir);

  let cloudToken: string | null = null;
  if (settings.cloudUrl) {
    try {
      cloudToken = readSecretLine(settings.cloudTokenFile as string, { what: 'cloud token file' });
    } catch (error) {
      throw new StartupFailure((error as Error).message, 1);
    }
  } else if (settings.restore) {
    throw new StartupFailure('--restore needs --cloud-url and --cloud-token-file', 2);
  }
  let restoreNote: string | null = null;
  /** Records restored from the cloud are records the cloud holds: trimming need not keep them. */
  let restoredSeq = 0;
  if (settings.cloudUrl && cloudToken && (settings.restore || existingHistory(settings.dataDir) === null)) {
    log.info('restoring this machine\'s history from the cloud', { url: settings.cloudUrl, machine_id: machineId });
    const outcome = await restoreFromCloud({ url: settings.cloudUrl, token: cloudToken, machineId, dataDir: settings.dataDir, timeoutMs: settings.restoreTimeoutMs });
    restoreNote = 'skipped' in outcome ? `not restored: ${outcome.skipped}` : `restored ${outcome.restored} records up to seq ${outcome.head.seq}`;
    if (!('skipped' in outcome)) restoredSeq = outcome.head.seq;
    ('skipped' in outcome ? log.warn : log.info)(restoreNote, { url: settings.cloudUrl });
  }

  const builder = new RecordBuilder(capsOf(settings), redactionOf(settings), settings.attribution ? daemonWriter() : undefined);
  const store = new TaskStore({
    dataDir: settings.dataDir,
    dataFile: settings.dataFile,
    machineId,
    maxTasks: settings.maxTasks,
    builder,
    checkpointIdleMs: settings.checkpointIdleMs,
    stopCheckpointMs: settings.stopCheckpointMs,
    checkpointJournalBytes: settings.checkpointJournalBytes,
    cacheBytes: settings.cacheBytes,
  });
  const subscriptions = new SubscriptionHub((taskId) => store.chain.tasks.get(taskId)?.writer?.uid);
  store.onCommit((records) => subscriptions.publish(records));
  const tamper = new TamperWatch({ store, checkpointer: store.checkpointer, journal: store.journal, dataFile: settings.dataFile });
  const { cloudUrl } = settings;
  const cloud = cloudUrl && cloudToken ? new CloudSync({ store, url: cloudUrl, connect: () => CloudConnection.open(cloudUrl, cloudToken), retryMaxMs: settings.cloudRetryMaxMs, dataDir: settings.dataDir }) : null;
  // The replay at start trims too: it holds what the cloud cursor (read once, by the sync) lacks.
  if (cloud) store.holdUnackedAbove(Math.max(restoredSeq, cloud.status().acked_seq));

  const rpc = new RpcDispatcher<MethodContext>(log, batchLimitsOf(settings));
  registerMethods(rpc, {
    version: PACKAGE_VERSION,
    socketPath: settings.socketPath,
    dataFile: settings.dataFile,
    startedAt: Date.now(),
    store,
    taskSource: new StoredTaskSource(store),
    maxMessageBytes: settings.maxMessageBytes,
    builder,
    subscriptions,
    access: new TaskAccess({ daemonUid: process.getuid?.() ?? 0, adminGid }),
    tamper,
    cloudStatus: () => (cloud ? { ...cloud.status(), restore: restoreNote } : { ...disabledCloudStatus(), restore: restoreNote }),
  });
  const server = new SocketServer({
    socketPath: settings.socketPath,
    listenFd,
    group: settings.socketGroup,
    limits: connectionLimitsOf(settings),
    attribution: settings.attribution,
    onMessage: (text, connection) => rpc.handleText(text, { connection }),
  });

  // Started in this order, stopped in reverse.
  const parts: [string, Lifecycle][] = [
    ['store', store],
    ['socket server', { start: () => server.listen(), stop: () => server.close() }],
    ...(cloud ? [['cloud sync', cloud] as [string, Lifecycle]] : []),
    ['tamper watch', tamper],
  ];
  const started: Lifecycle[] = [];
  for (const [name, part] of parts) {
    try {
      await part.start();
    } catch (error) {
      for (const running of started.reverse()) await running.stop().catch(() => undefined);
      throw startupMessage(name, error, settings);
    }
    started.push(part);
  }
  const stopWatchdog = startWatchdog();
  const head = store.head;
  log.info('ready', { version: PACKAGE_VERSION, socket: listenFd === null ? settings.socketPath : `fd ${listenFd}`, data_file: settings.dataFile, machine_id: machineId, last_seq: head.seq, tasks: store.taskCount, running: store.runningTasks.length, cloud: settings.cloudUrl ?? 'disabled' });
  await notifySystemd('READY=1', `STATUS=serving ${store.taskCount} tasks, last seq ${head.seq}`, `MAINPID=${process.pid}`);

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    setTimeout(() => {
      log.error('stop took too long; exiting with work unfinished', { deadline_ms: STOP_DEADLINE_MS });
      process.exit(1);
    }, STOP_DEADLINE_MS).unref();
    log.info('stopping', { signal });
    rpc.refuseAll = new RpcError(ErrorCodes.ShuttingDown);
    server.stopAccepting();
    const notified = notifySystemd('STOPPING=1');
    stopWatchdog?.();
    await store.drain(); // answers every commit in flight
    await new Promise((resolve) => setImmediate(resolve)); // let the last answers reach the sockets
    for (const part of started.reverse()) await part.stop(); // the store last: its final checkpoint
    await notified;
    log.info('stopped', { last_seq: store.head.seq });
    process.exit(0);
  };
  stopHandler = (signal) => void stop(signal);
  if (signalBeforeReady) stopHandler(signalBeforeReady);
  reloadHandler = () => {
    try {
      const next = resolveSettings(flags);
      setLogLevel(next.logLevel);
      builder.caps = capsOf(next);
      builder.redaction = redactionOf(next);
      store.setMaxTasks(next.maxTasks);
      const needRestart = (['socketPath', 'socketGroup', 'attribution', 'adminGroup', 'dataDir', 'machineId', 'cloudUrl', 'cloudTokenFile', 'maxMessageBytes', 'maxConnections', 'maxConnectionsPerUid', 'handshakeTimeoutMs', 'maxClientOutputBytes', 'maxBufferedBytes', 'maxBatchRequests', 'maxBatchAnswerBytes', 'batchConcurrency'] as const).filter((key) => next[key] !== settings[key]);
      if (needRestart.length) log.warn('some changed settings take effect only after a restart', { settings: needRestart.join(',') });
      log.info('reloaded settings', { config: next.configFile ?? 'none', max_tasks: next.maxTasks, redact: next.redact });
    } catch (error) {
      log.error('reload failed; keeping the current settings', { error: (error as Error).message });
    }
  };
}

// Signals are taken from the first instruction on: one that arrives while the daemon starts is
// acted on as soon as it can stop cleanly, instead of killing it half-started.
let stopHandler: ((signal: string) => void) | null = null;
let reloadHandler: (() => void) | null = null;
let signalBeforeReady: string | null = null;
let releaseDataDir: (() => void) | null = null;
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => (stopHandler ? stopHandler(signal) : (signalBeforeReady ??= signal)));
}
process.on('SIGHUP', () => reloadHandler?.());
process.on('exit', () => releaseDataDir?.());

const flags = parseFlags(process.argv);
start(flags).catch((error: unknown) => {
  if (error instanceof StartupFailure) {
    log.error(error.message);
    process.exit(error.exitCode);
  }
  log.error('taskhistoryd failed to start', { error: error instanceof Error ? (error.stack ?? error.message) : String(error) });
  process.exit(1);
});
