import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { DEFAULT_FIELD_CAP_BYTES, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_TASKS } from '../protocol/limits.js';
import { dataFilePath, resolveDataDir, resolveSocketPath } from '../protocol/paths.js';
import { compileUserRules, type RedactionRule } from '../protocol/redaction.js';
import { parseLogLevel, type LogLevel } from '../node/log.js';
import { currentPathEnvironment } from '../node/path-environment.js';
import type { BatchLimits } from '../node/rpc-dispatch.js';
import type { ConnectionLimits } from './socket-server.js';

export interface Settings {
  socketPath: string;
  socketGroup?: string;
  attribution: boolean;
  adminGroup?: string;
  dataDir: string;
  dataFile: string;
  maxTasks: number;
  machineId?: string;
  fieldCapBytes: number;
  descriptionCapBytes: number;
  commandCapBytes: number;
  planCapBytes: number;
  maxMessageBytes: number;
  maxConnections: number;
  maxConnectionsPerUid: number;
  handshakeTimeoutMs: number;
  maxClientOutputBytes: number;
  maxBufferedBytes: number;
  maxBatchRequests: number;
  maxBatchAnswerBytes: number;
  batchConcurrency: number;
  checkpointIdleMs: number;
  checkpointJournalBytes: number;
  stopCheckpointMs: number;
  cacheBytes: number;
  logLevel: LogLevel;
  redact: boolean;
  redactionRules: RedactionRule[];
  cloudUrl?: string;
  cloudTokenFile?: string;
  cloudRetryMaxMs: number;
  restore: boolean;
  restoreTimeoutMs: number;
  configFile?: string;
}

/** `int`: a positive integer; `count`: zero or more. */
type Kind = 'string' | 'int' | 'count' | 'bool';

/** Every setting: its flag, its TASKHISTORY_* variable and its config-file key, all derived from one name. */
/** Daemon-only defaults: caps on what one call may store, and the cloud connection's tuning. */
const DEFAULT_DESCRIPTION_CAP_BYTES = 4 * 1024;
const DEFAULT_COMMAND_CAP_BYTES = 64 * 1024;
/** A planned-steps array larger than this (serialized) is refused with PayloadTooLarge. */
const DEFAULT_PLAN_CAP_BYTES = 1024 * 1024;
const DEFAULT_CLOUD_RETRY_MAX_MS = 30_000;
const DEFAULT_RESTORE_TIMEOUT_MS = 10_000;
/** Bounds on connections and batches (README, "Security"). */
const DEFAULT_MAX_CONNECTIONS = 1000;
/** A quarter of the overall cap: one uid cannot take every slot, and one user's many agents still fit. */
const DEFAULT_MAX_CONNECTIONS_PER_UID = 256;
const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
const DEFAULT_MAX_CLIENT_OUTPUT_BYTES = 32 * 1024 * 1024;
const DEFAULT_MAX_BUFFERED_BYTES = 512 * 1024 * 1024;
const DEFAULT_MAX_BATCH_REQUESTS = 1000;
const DEFAULT_MAX_BATCH_ANSWER_BYTES = 16 * 1024 * 1024;
const DEFAULT_BATCH_CONCURRENCY = 32;
const DEFAULT_CACHE_BYTES = 8 * 1024 * 1024;
/** Records and bytes per batch pushed to the cloud. */
export const CLOUD_BATCH_RECORDS = 2000;
export const CLOUD_BATCH_BYTES = 4 * 1024 * 1024;

const OPTIONS: { key: keyof Settings; name: string; kind: Kind; help: string; fallback?: unknown }[] = [
  { key: 'socketPath', name: 'socket', kind: 'string', help: 'Unix socket to serve (default: see README, "Paths")' },
  { key: 'socketGroup', name: 'socket-group', kind: 'string', help: 'group allowed to connect: socket 0660, directory 0750 (default: owner only, 0600/0700)' },
  { key: 'attribution', name: 'attribution', kind: 'bool', help: "stamp every record with its writer (the peer's uid, gid, pid, comm, exe) and show each uid only its own tasks; needs the native addon (--no-attribution: no writers, every client sees every task)", fallback: true },
  { key: 'adminGroup', name: 'admin-group', kind: 'string', help: 'group whose members see and write every task, as root and the daemon\'s own uid do (default: none)' },
  { key: 'dataDir', name: 'data-dir', kind: 'string', help: 'directory of task_history.json and its journal' },
  { key: 'maxTasks', name: 'max-tasks', kind: 'int', help: 'finished tasks kept beyond this many are trimmed (running ones never)', fallback: DEFAULT_MAX_TASKS },
  { key: 'machineId', name: 'machine-id', kind: 'string', help: 'machine id stamped on every task (default: derived from /etc/machine-id)' },
  { key: 'fieldCapBytes', name: 'field-cap-bytes', kind: 'int', help: 'cap on output, error and recovery, each', fallback: DEFAULT_FIELD_CAP_BYTES },
  { key: 'descriptionCapBytes', name: 'description-cap-bytes', kind: 'int', help: 'cap on a task description', fallback: DEFAULT_DESCRIPTION_CAP_BYTES },
  { key: 'commandCapBytes', name: 'command-cap-bytes', kind: 'int', help: 'cap on a step command', fallback: DEFAULT_COMMAND_CAP_BYTES },
  { key: 'planCapBytes', name: 'plan-cap-bytes', kind: 'int', help: 'largest planned-steps list accepted', fallback: DEFAULT_PLAN_CAP_BYTES },
  { key: 'maxMessageBytes', name: 'max-message-bytes', kind: 'int', help: 'largest WebSocket message or JSON line', fallback: DEFAULT_MAX_MESSAGE_BYTES },
  { key: 'maxConnections', name: 'max-connections', kind: 'int', help: 'connections served at once; more are refused (503 or a 1007 error line)', fallback: DEFAULT_MAX_CONNECTIONS },
  { key: 'maxConnectionsPerUid', name: 'max-connections-per-uid', kind: 'int', help: 'connections of one peer uid (SO_PEERCRED, root included) served at once; more are refused like --max-connections', fallback: DEFAULT_MAX_CONNECTIONS_PER_UID },
  { key: 'handshakeTimeoutMs', name: 'handshake-timeout-ms', kind: 'int', help: 'a connection must complete its WebSocket upgrade or first line within this long', fallback: DEFAULT_HANDSHAKE_TIMEOUT_MS },
  { key: 'maxClientOutputBytes', name: 'max-client-output-bytes', kind: 'int', help: 'answers and events waiting for one client to read; past it the client is cut off', fallback: DEFAULT_MAX_CLIENT_OUTPUT_BYTES },
  { key: 'maxBufferedBytes', name: 'max-buffered-bytes', kind: 'int', help: 'input and output held for all connections together; past it the largest holder is cut off', fallback: DEFAULT_MAX_BUFFERED_BYTES },
  { key: 'maxBatchRequests', name: 'max-batch-requests', kind: 'int', help: 'requests in one batch; a longer batch is refused whole (1003)', fallback: DEFAULT_MAX_BATCH_REQUESTS },
  { key: 'maxBatchAnswerBytes', name: 'max-batch-answer-bytes', kind: 'int', help: "once a batch's answer holds this much, its calls not yet started are refused unexecuted (1003)", fallback: DEFAULT_MAX_BATCH_ANSWER_BYTES },
  { key: 'batchConcurrency', name: 'batch-concurrency', kind: 'int', help: 'calls of one batch running at once', fallback: DEFAULT_BATCH_CONCURRENCY },
  { key: 'checkpointIdleMs', name: 'checkpoint-idle-ms', kind: 'int', help: 'rewrite task_history.json after this long without commits', fallback: 1000 },
  { key: 'checkpointJournalBytes', name: 'checkpoint-journal-bytes', kind: 'int', help: '...or once the journal has grown this much and by half the data file', fallback: 64 * 1024 * 1024 },
  { key: 'stopCheckpointMs', name: 'stop-checkpoint-ms', kind: 'count', help: 'how long a stop may spend rewriting task_history.json (0: not at all); past it the journal keeps the rest and the next start replays it', fallback: 5000 },
  { key: 'cacheBytes', name: 'cache-bytes', kind: 'int', help: 'recent record content kept in memory; a log this small is held whole, so a foreign overwrite of the data file in place is repaired from memory', fallback: DEFAULT_CACHE_BYTES },
  { key: 'logLevel', name: 'log-level', kind: 'string', help: 'error, warn, info or debug', fallback: 'info' },
  { key: 'redact', name: 'redact', kind: 'bool', help: 'redact secrets before storing (--no-redact to turn off)', fallback: true },
  { key: 'cloudUrl', name: 'cloud-url', kind: 'string', help: 'cloud endpoint, ws:// or wss://…/v1/sync' },
  { key: 'cloudTokenFile', name: 'cloud-token-file', kind: 'string', help: 'file holding the cloud token on its first line (mode 0600)' },
  { key: 'cloudRetryMaxMs', name: 'cloud-retry-max-ms', kind: 'int', help: 'cap of the exponential retry delay', fallback: DEFAULT_CLOUD_RETRY_MAX_MS },
  { key: 'restore', name: 'restore', kind: 'bool', help: "pull this machine's records from the cloud before serving", fallback: false },
  { key: 'restoreTimeoutMs', name: 'restore-timeout-ms', kind: 'int', help: 'how long restore tries before starting a fresh chain', fallback: DEFAULT_RESTORE_TIMEOUT_MS },
];

const envName = (name: string) => `TASKHISTORY_${name.toUpperCase().replace(/-/g, '_')}`;
const configKey = (name: string) => name.replace(/-/g, '_');

export class SettingsError extends Error {}

function convert(kind: Kind, raw: unknown, where: string): unknown {
  if (kind === 'bool') {
    if (typeof raw === 'boolean') return raw;
    if (raw === 'true' || raw === '1' || raw === 'yes') return true;
    if (raw === 'false' || raw === '0' || raw === 'no') return false;
    throw new SettingsError(`${where} must be true or false, not ${JSON.stringify(raw)}`);
  }
  if (kind === 'int' || kind === 'count') {
    const value = typeof raw === 'number' ? raw : Number(raw);
    const least = kind === 'int' ? 1 : 0;
    if (!Number.isSafeInteger(value) || value < least) throw new SettingsError(`${where} must be ${kind === 'int' ? 'a positive integer' : 'an integer of 0 or more'}, not ${JSON.stringify(raw)}`);
    return value;
  }
  if (typeof raw !== 'string' || raw === '') throw new SettingsError(`${where} must be a non-empty string`);
  return raw;
}

export function daemonCommand(version: string): Command {
  const program = new Command('taskhistoryd')
    .description('taskhistory daemon: one append-only, tamper-evident audit trail of the tasks agents run on this machine')
    .version(version)
    .option('--config <file>', 'JSON config file holding any of these settings (snake_case keys) and "redaction_rules"; flags win over TASKHISTORY_* variables, which win over the file')
    .showHelpAfterError()
    .exitOverride();
  for (const option of OPTIONS) {
    if (option.kind === 'bool') {
      program.addOption(new Option(`--${option.name}`, `${option.help} [${envName(option.name)}]`));
      program.addOption(new Option(`--no-${option.name}`).hideHelp());
    } else {
      const { kind } = option;
      const flag = new Option(`--${option.name} <${kind === 'string' ? 'value' : 'n'}>`, `${option.help} [${envName(option.name)}]`);
      if (kind !== 'string') flag.argParser((raw) => {
        try {
          return convert(kind, raw, `--${option.name}`);
        } catch (error) {
          throw new InvalidArgumentError((error as Error).message);
        }
      });
      program.addOption(flag);
    }
  }
  return program;
}

/**
 * Settings from flags, then TASKHISTORY_* variables, then the config file, then defaults.
 * Re-run on SIGHUP with the same flags to reload the file.
 */
export function resolveSettings(flags: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): Settings {
  const configFile = (flags.config as string | undefined) ?? env.TASKHISTORY_CONFIG;
  const config = configFile ? readConfig(configFile) : {};
  const settings: Record<string, unknown> = { configFile };
  for (const option of OPTIONS) {
    const flagKey = option.name.replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
    let value: unknown;
    if (flags[flagKey] !== undefined) value = flags[flagKey];
    else if (env[envName(option.name)] !== undefined) value = convert(option.kind, env[envName(option.name)], envName(option.name));
    else if (config[configKey(option.name)] !== undefined) value = convert(option.kind, config[configKey(option.name)], `"${configKey(option.name)}" in ${configFile}`);
    else value = option.fallback;
    settings[option.key] = value;
  }
  const level = parseLogLevel(String(settings.logLevel));
  if (!level) throw new SettingsError(`log level must be error, warn, info or debug, not ${JSON.stringify(settings.logLevel)}`);
  settings.logLevel = level;
  try {
    settings.redactionRules = compileUserRules(config.redaction_rules);
  } catch (error) {
    throw new SettingsError(`${configFile}: ${(error as Error).message}`);
  }
  const cloudUrl = settings.cloudUrl as string | undefined;
  if (cloudUrl && !/^wss?:\/\//.test(cloudUrl)) throw new SettingsError(`--cloud-url must start with ws:// or wss://, not ${cloudUrl}`);
  if (cloudUrl && !settings.cloudTokenFile) throw new SettingsError('--cloud-url needs --cloud-token-file (a file with the token on its first line, mode 0600)');
  settings.socketPath = resolveSocketPath(settings.socketPath as string | undefined, currentPathEnvironment());
  settings.dataDir = resolveDataDir(settings.dataDir as string | undefined, currentPathEnvironment());
  settings.dataFile = dataFilePath(settings.dataDir as string);
  return settings as unknown as Settings;
}

function readConfig(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new SettingsError(`cannot read config file ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new SettingsError(`config file ${file} is not valid JSON: ${(error as Error).message}`);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new SettingsError(`config file ${file} must hold a JSON object`);
  const known = new Set([...OPTIONS.map((o) => configKey(o.name)), 'redaction_rules']);
  const unknown = Object.keys(parsed).filter((key) => !known.has(key));
  if (unknown.length) throw new SettingsError(`config file ${file} has unknown keys: ${unknown.join(', ')}`);
  return parsed as Record<string, unknown>;
}

export function connectionLimitsOf(settings: Settings): ConnectionLimits {
  return {
    maxMessageBytes: settings.maxMessageBytes,
    maxConnections: settings.maxConnections,
    maxConnectionsPerUid: settings.maxConnectionsPerUid,
    handshakeTimeoutMs: settings.handshakeTimeoutMs,
    maxClientOutputBytes: settings.maxClientOutputBytes,
    maxBufferedBytes: settings.maxBufferedBytes,
  };
}

export function batchLimitsOf(settings: Settings): BatchLimits {
  return { maxEntries: settings.maxBatchRequests, maxAnswerBytes: settings.maxBatchAnswerBytes, concurrency: settings.batchConcurrency };
}
