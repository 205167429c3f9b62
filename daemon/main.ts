#!/usr/bin/env node
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { CommanderError } from 'commander';
import { isJournalSegmentName } from '../protocol/data-file.js';
import { ErrorCodes, RpcError } from '../protocol/errors.js';
import { BUILTIN_REDACTION_RULES } from '../protocol/redaction.js';
import { disabledCloudStatus, readCloudToken, CloudSync } from './cloud-sync.js';
import { CloudCursor } from './cloud-cursor.js';
import { restoreFromCloud } from './cloud-restore.js';
import { DataDirInUse, lockDataDir } from './data-dir-lock.js';
import { log, setLogLevel } from '../node/log.js';
import { resolveMachineId } from './machine-id.js';
import { RecordBuilder, type FieldCaps, type RedactionSettings } from './record-builder.js';
import { RpcDispatcher } from '../node/rpc-dispatch.js';
import { registerMethods, type MethodContext } from './rpc-methods.js';
import { daemonCommand, resolveSettings, SettingsError, type Settings } from './settings.js';
import { SocketInUse, SocketServer } from './socket-server.js';
import { socketAccepts } from '../node/socket-probe.js';
import { StoreDamaged, TaskStore } from './store.js';
import { SubscriptionHub } from './subscriptions.js';
import { inheritedListenFd, notifySystemd, startWatchdog } from './systemd.js';
import { TamperWatch } from './tamper-watch.js';

const VERSION = (createRequire(import.meta.url)('../../package.json') as { version: string }).version;
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

function dataDirIsEmpty(dataDir: string, dataFile: string): boolean {
  if (existsSync(dataFile)) return false;
  return !existsSync(dataDir) || !readdirSync(dataDir).some(isJournalSegmentName);
}

function parseFlags(argv: string[]): Record<string, unknown> {
  const program = daemonCommand(VERSION);
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
  const listenFd = inheritedListenFd();
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
  const machineId = resolveMachineId(settings.machineId, settings.dataDir);

  let cloudToken: string | null = null;
  if (settings.cloudUrl) {
    try {
      cloudToken = readCloudToken(settings.cloudTokenFile as string);
    } catch (error) {
      throw new StartupFailure((error as Error).message, 1);
    }
  } else if (settings.restore) {
    throw new StartupFailure('--restore needs --cloud-url and --cloud-token-file', 2);
  }
  let restoreNote: string | null = null;
  /** Records restored from the cloud are records the cloud holds: trimming need not keep them. */
  let restoredSeq = 0;
  if (settings.cloudUrl && cloudToken && (settings.restore || dataDirIsEmpty(settings.dataDir, settings.dataFile))) {
    log.info('restoring this machine\'s history from the cloud', { url: settings.cloudUrl, machine_id: machineId });
    const outcome = await restoreFromCloud({ url: settings.cloudUrl, token: cloudToken, machineId, dataDir: settings.dataDir, timeoutMs: settings.restoreTimeoutMs });
    restoreNote = 'skipped' in outcome ? `not restored: ${outcome.skipped}` : `restored ${outcome.restored} records up to seq ${outcome.head.seq}`;
    if (!('skipped' in outcome)) restoredSeq = outcome.head.seq;
    ('skipped' in outcome ? log.warn : log.info)(restoreNote, { url: settings.cloudUrl });
  }

  const builder = new RecordBuilder(capsOf(settings), redactionOf(settings));
  let store: TaskStore;
  try {
    store = await TaskStore.open({
      dataDir: settings.dataDir,
      dataFile: settings.dataFile,
      machineId,
      maxTasks: settings.maxTasks,
      builder,
      checkpointIdleMs: settings.checkpointIdleMs,
      checkpointJournalBytes: settings.checkpointJournalBytes,
      holdUnackedAbove: settings.cloudUrl ? Math.max(restoredSeq, new CloudCursor(settings.dataDir).load()?.seq ?? 0) : null,
    });
  } catch (error) {
    if (error instanceof StoreDamaged) {
      throw new StartupFailure(`${error.message}. The file was left untouched. To recover: restore it from the cloud (move the data dir aside and start with --restore), or move the file aside to start a new history. See README, "Recovering a damaged data file".`, 1);
    }
    const code = (error as NodeJS.ErrnoException).code;
    throw new StartupFailure(`cannot open the data dir ${settings.dataDir}: ${code ?? String(error)}`, 1);
  }

  const subscriptions = new SubscriptionHub();
  store.onCommit((records) => subscriptions.publish(records));
  const tamper = new TamperWatch(store, settings.dataFile);
  const cloud = settings.cloudUrl && cloudToken ? new CloudSync({ store, url: settings.cloudUrl, token: cloudToken, retryMaxMs: settings.cloudRetryMaxMs, dataDir: settings.dataDir }) : null;

  const rpc = new RpcDispatcher<MethodContext>(log);
  registerMethods(rpc, {
    version: VERSION,
    socketPath: settings.socketPath,
    dataFile: settings.dataFile,
    startedAt: Date.now(),
    store,
    builder,
    subscriptions,
    tamper,
    cloudStatus: () => (cloud ? { ...cloud.status(), restore: restoreNote } : { ...disabledCloudStatus(), restore: restoreNote }),
  });
  const server = new SocketServer({
    socketPath: settings.socketPath,
    listenFd,
    group: settings.socketGroup,
    maxMessageBytes: settings.maxMessageBytes,
    onMessage: (text, connection) => rpc.handleText(text, { connection }),
  });
  try {
    await server.listen();
  } catch (error) {
    await store.close();
    if (error instanceof SocketInUse) throw new StartupFailure(error.message, 1);
    throw new StartupFailure(`cannot listen on ${settings.socketPath}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, 1);
  }
  cloud?.start();
  const stopWatchdog = startWatchdog();
  const head = store.head;
  log.info('ready', { version: VERSION, socket: listenFd === null ? settings.socketPath : `fd ${listenFd}`, data_file: settings.dataFile, machine_id: machineId, last_seq: head.seq, tasks: store.tasks.length, running: store.runningTasks.length, cloud: settings.cloudUrl ?? 'disabled' });
  await notifySystemd('READY=1', `STATUS=serving ${store.tasks.length} tasks, last seq ${head.seq}`, `MAINPID=${process.pid}`);
  await tamper.start();

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
    await tamper.stop();
    await store.close(); // answers every commit in flight, writes the last checkpoint
    await cloud?.stop();
    await new Promise((resolve) => setImmediate(resolve)); // let the last answers reach the sockets
    await server.close();
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
      const needRestart = (['socketPath', 'socketGroup', 'dataDir', 'machineId', 'cloudUrl', 'cloudTokenFile', 'maxMessageBytes'] as const).filter((key) => next[key] !== settings[key]);
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
