#!/usr/bin/env node
import { Command, InvalidArgumentError, Option } from 'commander';
import pg from 'pg';
import { log } from '../node/log.js';
import { FileStorage, StorageLoadError } from './file-storage.js';
import { DatabaseTooOld, migrate } from './migrations.js';
import { describeDatabase, PostgresStorage } from './postgres-storage.js';
import { CloudServer } from './server.js';
import type { CloudStorage } from './storage.js';
import { createToken, DatabaseTokens, listTokens, revokeToken, type TokenScope } from './token-store.js';
import { AuthenticatorChain, TokenRegistry, TokensFileError, type Authenticator } from './tokens.js';

// `taskhistory-cloud`: the reference sync endpoint (serve, the default), `migrate` and `token`. Flags, start-up checks, signals.

const DATABASE_URL_ENV = 'TASKHISTORY_CLOUD_DATABASE_URL';
const DATA_DIR_ENV = 'TASKHISTORY_CLOUD_DATA_DIR';

function parsePort(text: string): number {
  const port = Number(text);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new InvalidArgumentError('a port is an integer from 0 to 65535');
  return port;
}

const databaseUrlOption = () =>
  new Option('--database-url <url>', `PostgreSQL URL as libpq reads it (a Unix-socket dir as ?host=/dir); also $${DATABASE_URL_ENV}`).env(DATABASE_URL_ENV);

interface ServeOptions {
  port: number;
  host: string;
  dataDir?: string;
  databaseUrl?: string;
  tokensFile?: string;
}

/** A user's mistake at start-up: the message says what and how to fix it; exit 2. */
class UsageError extends Error {}

const program = new Command('taskhistory-cloud')
  .description("Reference cloud endpoint for taskhistory: keeps every machine's chain, verified, in files (--data-dir) or PostgreSQL (--database-url)")
  .enablePositionalOptions()
  .option('--port <port>', 'TCP port (0 picks a free one; the bound address is logged)', parsePort, 8787)
  .option('--host <host>', 'address to listen on', '127.0.0.1')
  .addOption(new Option('--data-dir <dir>', `file backend: directory for the per-machine record files; also $${DATA_DIR_ENV}`).env(DATA_DIR_ENV))
  .addOption(databaseUrlOption())
  .option('--tokens-file <file>', 'JSON tokens file, mode 600: {"tokens": [{"token", "machine_id"} | {"token", "admin": true}]}; required with --data-dir, optional beside the database\'s tokens')
  .action((options: ServeOptions) => serve(options).catch((error: unknown) => failed(error, `could not start on ${options.host}:${options.port}`)));

program
  .command('migrate')
  .description('create or migrate the PostgreSQL schema, then exit (the endpoint also does this at start)')
  .addOption(databaseUrlOption().makeOptionMandatory())
  .action(({ databaseUrl }: { databaseUrl: string }) =>
    withDatabase(databaseUrl, async (_client, applied) => applied).then(
      (applied) => console.log(applied.length ? `applied migrations ${applied.join(', ')}` : 'the schema is up to date; nothing to do'),
      (error: unknown) => failed(error, 'could not migrate'),
    ),
  );

const token = program.command('token').description('manage the bearer tokens kept in the database');
token
  .command('create')
  .description('create a token and print it once on stdout (only its SHA-256 is kept)')
  .addOption(databaseUrlOption().makeOptionMandatory())
  .addOption(new Option('--machine <id>', 'a machine token: pushes and reads this machine only').conflicts(['admin', 'viewer']))
  .addOption(new Option('--admin', 'an admin token: reads every machine').conflicts(['viewer']))
  .option('--viewer', 'a viewer token: reads every machine, pushes nothing, manages nothing')
  .option('--name <text>', 'a label shown by token list')
  .action((options: { databaseUrl: string; machine?: string; admin?: boolean; viewer?: boolean; name?: string }) => {
    const scope: TokenScope | null = options.machine !== undefined ? 'machine' : options.admin ? 'admin' : options.viewer ? 'viewer' : null;
    if (scope === null) failed(new UsageError('say whose token it is: --machine ID, --admin or --viewer'), 'could not create a token');
    withDatabase(options.databaseUrl, (client) => createToken(client, scope, options.machine ?? null, options.name ?? null)).then(
      (created) => {
        console.log(created.token);
        console.error(`created token ${created.id} (${scope}${options.machine ? ` ${options.machine}` : ''}); it is shown only this once`);
      },
      (error: unknown) => failed(error, 'could not create a token'),
    );
  });
token
  .command('list')
  .description('list the tokens (never the tokens themselves)')
  .addOption(databaseUrlOption().makeOptionMandatory())
  .option('--json', 'print a JSON array of {id, name, scope, machine_id, created_at, last_used_at, revoked_at}')
  .action((options: { databaseUrl: string; json?: boolean }) =>
    withDatabase(options.databaseUrl, listTokens).then(
      (tokens) => {
        if (options.json) return console.log(JSON.stringify(tokens, null, 2));
        for (const t of tokens) {
          console.log([t.id, t.scope, t.machine_id ?? '-', t.name ?? '-', `created ${t.created_at}`, `used ${t.last_used_at ?? 'never'}`, t.revoked_at ? `REVOKED ${t.revoked_at}` : 'active'].join('\t'));
        }
      },
      (error: unknown) => failed(error, 'could not list tokens'),
    ),
  );
token
  .command('revoke')
  .description('revoke a token: every endpoint refuses it within seconds, open connections included')
  .argument('<id>', 'the token id, as token list shows it')
  .addOption(databaseUrlOption().makeOptionMandatory())
  .action((id: string, options: { databaseUrl: string }) =>
    withDatabase(options.databaseUrl, (client) => revokeToken(client, id)).then(
      (revoked) => {
        if (!revoked) failed(new UsageError(`no active token ${id} in ${describeDatabase(options.databaseUrl)}; see token list`), 'could not revoke');
        console.error(`revoked token ${id}`);
      },
      (error: unknown) => failed(error, 'could not revoke'),
    ),
  );

/** Connects, migrates (so commands work on a fresh database), runs `work` with the versions just applied, disconnects. */
async function withDatabase<T>(url: string, work: (client: pg.Client, applied: number[]) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await work(client, await migrate(client, describeDatabase(url)));
  } finally {
    await client.end();
  }
}

async function openStorage(given: ServeOptions): Promise<{ storage: CloudStorage; authenticator: Authenticator; where: string }> {
  // An empty value (`TASKHISTORY_CLOUD_DATA_DIR=` in an EnvironmentFile) means not given: the unit's default can be switched off.
  const options = { ...given, dataDir: given.dataDir || undefined, databaseUrl: given.databaseUrl || undefined };
  if ((options.dataDir === undefined) === (options.databaseUrl === undefined)) {
    throw new UsageError(`give exactly one of --data-dir DIR (files) and --database-url URL (PostgreSQL; or $${DATABASE_URL_ENV})`);
  }
  const fileTokens = options.tokensFile === undefined ? [] : [TokenRegistry.load(options.tokensFile)];
  if (options.dataDir !== undefined) {
    if (fileTokens.length === 0) throw new UsageError('the file backend (--data-dir) takes its tokens from --tokens-file FILE');
    return { storage: await FileStorage.open(options.dataDir), authenticator: fileTokens[0], where: options.dataDir };
  }
  const storage = await PostgresStorage.open(options.databaseUrl!);
  return { storage, authenticator: new AuthenticatorChain([...fileTokens, new DatabaseTokens(storage.pool)]), where: describeDatabase(options.databaseUrl!) };
}

async function serve(options: ServeOptions): Promise<void> {
  const { storage, authenticator, where } = await openStorage(options);
  const server = new CloudServer({ storage, authenticator, host: options.host, port: options.port });
  const url = await server.listen();

  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    log.info('stopping', { signal });
    server
      .close()
      .then(() => storage.close())
      .then(
        () => process.exit(0),
        (error: unknown) => {
          log.error('could not stop cleanly', { error: (error as Error).message });
          process.exit(1);
        },
      );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // Announced only now: whoever waits for this line may stop the endpoint at once.
  log.info('listening', { url, storage: where });
}

function failed(error: unknown, what: string): never {
  const expected = error instanceof TokensFileError || error instanceof StorageLoadError || error instanceof DatabaseTooOld || error instanceof UsageError;
  const message = (error as Error).message ?? String(error);
  log.error(expected ? message : `${what}: ${message}`);
  process.exit(expected ? 2 : 1);
}

program.parse();
