import { log } from '../node/log.js';
import type { Authenticator } from './tokens.js';

/** How often open connections' tokens are checked again: a revoked token is locked out within this (plus one check). */
export const REVOCATION_CHECK_MS = 1000;

/**
 * Open connections (sync WebSockets, event streams) and the token each was authenticated with;
 * every REVOCATION_CHECK_MS the tokens are checked again and connections whose token was revoked
 * are closed, so revoking needs no restart of any endpoint process.
 */
export class RevocationWatch {
  private readonly open = new Map<() => void, string>();
  private timer: NodeJS.Timeout | undefined;
  private checking = false;

  constructor(private readonly authenticator: Authenticator) {}

  start(): void {
    this.timer = setInterval(() => void this.check(), REVOCATION_CHECK_MS).unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Tracks a connection until the returned function is called (on its close). */
  track(tokenId: string, close: () => void): () => void {
    this.open.set(close, tokenId);
    return () => this.open.delete(close);
  }

  private async check(): Promise<void> {
    if (this.checking || this.open.size === 0) return;
    this.checking = true;
    try {
      const revoked = await this.authenticator.revokedAmong([...new Set(this.open.values())]);
      for (const [close, tokenId] of this.open) {
        if (!revoked.has(tokenId)) continue;
        this.open.delete(close);
        log.info('closed a connection whose token was revoked', { token_id: tokenId });
        close();
      }
    } catch (error) {
      // The database is unreachable: pushes fail on their own; the check runs again next time.
      log.debug('could not check open connections for revoked tokens', { error: (error as Error).message });
    } finally {
      this.checking = false;
    }
  }
}
