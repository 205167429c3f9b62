import type { Command } from 'commander';
import { CLOUD_SYNC_PATH, cloudTaskHistoryPath } from '../../protocol/cloud-methods.js';
import { readSecretLine, SecretFileError } from '../../node/secret-file.js';
import { CliError, ExitCodes, integerAtLeast, printJson } from './context.js';

interface PullOptions {
  machine: string;
  cloudUrl: string;
  tokenFile: string;
  maxTasks?: number;
}

/** The cloud's HTTP base from the URL a daemon syncs to (ws[s]://host/v1/sync) or a plain http[s] base. */
export function cloudHttpBase(cloudUrl: string): URL {
  let url: URL;
  try {
    url = new URL(cloudUrl);
  } catch {
    throw new CliError(ExitCodes.usage, `pull: --cloud-url '${cloudUrl}' is not a URL`);
  }
  const protocol = { 'ws:': 'http:', 'wss:': 'https:', 'http:': 'http:', 'https:': 'https:' }[url.protocol];
  if (!protocol) throw new CliError(ExitCodes.usage, `pull: --cloud-url must be http(s) or ws(s), not ${url.protocol}`);
  const path = url.pathname.replace(/\/+$/, '');
  const basePath = path.endsWith(CLOUD_SYNC_PATH) ? path.slice(0, -CLOUD_SYNC_PATH.length) : path;
  return new URL(`${protocol}//${url.host}${basePath}`);
}

/** The bearer token; unlike the daemon, pull takes a token file others may read (a user's own choice). */
function readToken(tokenFile: string): string {
  try {
    return readSecretLine(tokenFile, { what: 'token file', ownerOnly: false });
  } catch (error) {
    throw error instanceof SecretFileError ? new CliError(ExitCodes.usage, `pull: ${error.message}`) : error;
  }
}

/** The cloud's `{error}` message, or the start of whatever else it answered. */
function errorText(body: string): string {
  try {
    const { error } = JSON.parse(body) as { error?: unknown };
    if (typeof error === 'string') return error;
  } catch {
    // not JSON: show it as it is
  }
  return body.slice(0, 200);
}

async function pull(options: PullOptions): Promise<unknown> {
  const token = readToken(options.tokenFile);
  const url = cloudHttpBase(options.cloudUrl);
  url.pathname = `${url.pathname.replace(/\/$/, '')}${cloudTaskHistoryPath(options.machine)}`;
  if (options.maxTasks !== undefined) url.searchParams.set('max_tasks', String(options.maxTasks));
  let response: Response;
  try {
    response = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
  } catch (error) {
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    throw new CliError(ExitCodes.failure, `pull: cannot reach ${url.origin} (${cause?.code ?? cause?.message ?? (error as Error).message})`);
  }
  const body = await response.text();
  if (!response.ok) {
    throw new CliError(ExitCodes.failure, `pull: ${url.href} answered ${response.status} ${response.statusText}: ${errorText(body)}`);
  }
  try {
    return JSON.parse(body);
  } catch {
    throw new CliError(ExitCodes.failure, `pull: ${url.href} did not answer JSON`);
  }
}

export function registerPullCommand(program: Command): void {
  program
    .command('pull')
    .description("fetch a machine's task_history.json from the cloud endpoint (to restore or inspect it)")
    .requiredOption('--machine <ID>', 'the machine_id whose log to fetch')
    .requiredOption('--cloud-url <URL>', 'the cloud endpoint (http(s)://host:port, or the ws(s):// sync URL)')
    .requiredOption('--token-file <FILE>', 'a file whose first line is the bearer token')
    .option('--max-tasks <N>', 'keep at most N tasks in the file', integerAtLeast(1))
    .action(async (options: PullOptions) => printJson(await pull(options)));
}
