import { CloudMethods, type CloudHead } from '../protocol/cloud-methods.js';
import { ErrorCodes, RpcError } from '../protocol/errors.js';
import type { ChainRecord } from '../protocol/records.js';
import { RpcClient, RpcTimeoutError } from '../node/rpc-client.js';
import { WebSocketOpenError, WebSocketTransport } from '../node/websocket-transport.js';
import { CloudFailure, type CloudLink } from './cloud-link.js';

/** How long one call to the cloud may take before the connection is given up. */
const CLOUD_REQUEST_TIMEOUT_MS = 30_000;
/** A cloud asking for a longer pause than this (or lying about it) is retried after this. */
const MAX_RETRY_AFTER_MS = 10 * 60_000;

/**
 * One WebSocket to the cloud endpoint, the bearer token at the upgrade, JSON-RPC over it through
 * the project's RpcClient. Every failure reaches the caller as a CloudFailure saying its kind.
 */
export class CloudConnection implements CloudLink {
  private readonly rpc: RpcClient;
  private endedWith: Error | null = null;
  readonly ended: Promise<Error>;

  private constructor(
    private readonly transport: WebSocketTransport,
    url: string,
  ) {
    this.rpc = new RpcClient(transport, url);
    this.ended = new Promise((resolve) =>
      transport.onClose((reason) => {
        this.endedWith = new CloudFailure('unreachable', reason);
        resolve(this.endedWith);
      }),
    );
  }

  static async open(url: string, token: string, timeoutMs = CLOUD_REQUEST_TIMEOUT_MS): Promise<CloudConnection> {
    try {
      const transport = await WebSocketTransport.open(url, { peer: url, headers: { authorization: `Bearer ${token}` }, handshakeTimeoutMs: timeoutMs });
      return new CloudConnection(transport, url);
    } catch (error) {
      if (!(error instanceof WebSocketOpenError)) throw error;
      if (error.httpStatus === 401 || error.httpStatus === 403) {
        throw new CloudFailure('auth', `${url} refused the token (HTTP ${error.httpStatus}); check the cloud token file`);
      }
      throw new CloudFailure('unreachable', error.message);
    }
  }

  get failure(): Error | null {
    return this.endedWith;
  }

  head(machineId: string): Promise<CloudHead> {
    return this.call(CloudMethods.head.name, { machine_id: machineId }) as Promise<CloudHead>;
  }

  push(machineId: string, records: ChainRecord[]): Promise<CloudHead> {
    return this.call(CloudMethods.push.name, { machine_id: machineId, records }) as Promise<CloudHead>;
  }

  pull(machineId: string, afterSeq: number, limit: number, timeoutMs: number): Promise<{ records: unknown[]; more: boolean }> {
    const params = { machine_id: machineId, after_seq: afterSeq, limit };
    return this.call(CloudMethods.pull.name, params, timeoutMs) as Promise<{ records: unknown[]; more: boolean }>;
  }

  close(): void {
    this.transport.terminate();
  }

  private async call(method: string, params: unknown, timeoutMs = CLOUD_REQUEST_TIMEOUT_MS): Promise<unknown> {
    try {
      return await this.rpc.request(method, params, timeoutMs);
    } catch (error) {
      // A cloud that stopped answering gets no second call on this connection.
      if (error instanceof RpcTimeoutError) this.close();
      throw classified(error);
    }
  }
}

/** The CloudFailure for whatever a call rejected with. */
function classified(error: unknown): CloudFailure {
  if (!(error instanceof RpcError)) return new CloudFailure('unreachable', error instanceof Error ? error.message : String(error));
  switch (error.code) {
    case ErrorCodes.Unauthorized:
    case ErrorCodes.Forbidden:
      return new CloudFailure('auth', error.message);
    case ErrorCodes.ChainMismatch: {
      const data = error.data as { reason?: string; seq?: number; acked_seq?: number } | undefined;
      return new CloudFailure(
        'chain_mismatch',
        `${error.message} (${data?.reason ?? 'mismatch'} at seq ${data?.seq}; the cloud holds up to seq ${data?.acked_seq})`,
      );
    }
    case ErrorCodes.StorageFailure: {
      const retryAfter = (error.data as { retry_after_ms?: unknown } | undefined)?.retry_after_ms;
      const retryAfterMs = typeof retryAfter === 'number' && Number.isFinite(retryAfter) && retryAfter >= 0 ? Math.min(retryAfter, MAX_RETRY_AFTER_MS) : null;
      const when = retryAfterMs === null ? '' : `; it asks to retry in ${retryAfterMs} ms`;
      return new CloudFailure('storage', `the cloud's storage failed (code ${error.code}): ${error.message}${when}`, retryAfterMs);
    }
    default:
      return new CloudFailure('refused', `the cloud refused the call: ${error.message} (code ${error.code})`);
  }
}
