#!/usr/bin/env node
import { Command, InvalidArgumentError } from 'commander';
import { FileStorage, StorageLoadError } from './file-storage.js';
import { log } from '../node/log.js';
import { CloudServer } from './server.js';
import { TokenRegistry, TokensFileError } from './tokens.js';

// `taskhistory-cloud`: the reference sync endpoint. Flags, start-up checks, signals.

function parsePort(text: string): number {
  const port = Number(text);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new InvalidArgumentError('a port is an integer from 0 to 65535');
  return port;
}

interface ServeOptions {
  port: number;
  host: string;
  dataDir: string;
  tokensFile: string;
}

const program = new Command('taskhistory-cloud')
  .description('Reference cloud endpoint for taskhistory: keeps every machine\'s chain, verified')
  .option('--port <port>', 'TCP port (0 picks a free one; the bound address is logged)', parsePort, 8787)
  .option('--host <host>', 'address to listen on', '127.0.0.1')
  .requiredOption('--data-dir <dir>', 'directory for the per-machine record files')
  .requiredOption('--tokens-file <file>', 'JSON tokens file, mode 600: {"tokens": [{"token", "machine_id"} | {"token", "admin": true}]}')
  .action((options: ServeOptions) => serve(options).catch((error: unknown) => startFailed(error, options)));

async function serve(options: ServeOptions): Promise<void> {
  const authenticator = TokenRegistry.load(options.tokensFile);
  const storage = await FileStorage.open(options.dataDir);
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
  log.info('listening', { url, data_dir: options.dataDir });
}

function startFailed(error: unknown, options: ServeOptions): never {
  const expected = error instanceof TokensFileError || error instanceof StorageLoadError;
  const message = (error as Error).message ?? String(error);
  log.error(expected ? message : `could not start on ${options.host}:${options.port} with data dir ${options.dataDir}: ${message}`);
  process.exit(expected ? 2 : 1);
}

program.parse();
