import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import { AuthUnavailable, bearerTokenOf, digestOf, type Authenticated, type Authenticator, type Principal } from './tokens.js';

/**
 * Tokens in the database (PostgreSQL backend): `taskhistory-cloud token create|list|revoke`. A token
 * is 256 random bits, shown once; only its SHA-256 is stored. Every check reads the database, so a
 * revocation holds on every endpoint process at once for new connections, and within
 * REVOCATION_CHECK_MS for open ones (revocation-watch.ts).
 */
export type TokenScope = Principal['kind'];

export interface TokenListing {
  id: string;
  name: string | null;
  scope: TokenScope;
  machine_id: string | null;
  created_at: string;
  last_used_at: string | null;
  revoked_at: string | null;
}

const TOKEN_PREFIX = 'thc_';
/** last_used_at is written at most this often per token and process: a busy fleet must not write per request. */
const LAST_USED_EVERY_MS = 60_000;
const RETRY_AFTER_MS = 1000;

export class DatabaseTokens implements Authenticator {
  private readonly lastUsedWritten = new Map<string, number>();

  constructor(private readonly pool: pg.Pool) {}

  async authenticate(authorization: string | undefined): Promise<Authenticated | null> {
    const token = bearerTokenOf(authorization);
    if (token === null || !token.startsWith(TOKEN_PREFIX)) return null;
    let rows: { id: string; scope: TokenScope; machine_id: string | null }[];
    try {
      ({ rows } = await this.pool.query('SELECT id, scope, machine_id FROM tokens WHERE digest = $1 AND revoked_at IS NULL', [digestOf(token)]));
    } catch (error) {
      throw new AuthUnavailable(`the tokens table could not be read: ${(error as Error).message}`, RETRY_AFTER_MS);
    }
    if (rows.length === 0) return null;
    const { id, scope, machine_id } = rows[0];
    this.noteUse(id);
    const principal: Principal = scope === 'machine' ? { kind: 'machine', machineId: machine_id! } : { kind: scope };
    return { principal, tokenId: id };
  }

  async revokedAmong(tokenIds: string[]): Promise<Set<string>> {
    const { rows } = await this.pool.query<{ id: string }>('SELECT id FROM tokens WHERE id = ANY($1::text[]) AND revoked_at IS NOT NULL', [tokenIds]);
    return new Set(rows.map((row) => row.id));
  }

  private noteUse(id: string): void {
    const now = Date.now();
    if (now - (this.lastUsedWritten.get(id) ?? 0) < LAST_USED_EVERY_MS) return;
    this.lastUsedWritten.set(id, now);
    this.pool.query('UPDATE tokens SET last_used_at = now() WHERE id = $1', [id]).catch(() => this.lastUsedWritten.delete(id));
  }
}

/** Creates a token; returns its id and the token itself (printed once, never stored). */
export async function createToken(client: pg.ClientBase, scope: TokenScope, machineId: string | null, name: string | null): Promise<{ id: string; token: string }> {
  const token = `${TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`;
  const id = `tok_${randomBytes(8).toString('hex')}`;
  await client.query('INSERT INTO tokens (id, name, scope, machine_id, digest) VALUES ($1, $2, $3, $4, $5)', [id, name, scope, machineId, digestOf(token)]);
  return { id, token };
}

export async function listTokens(client: pg.ClientBase): Promise<TokenListing[]> {
  const { rows } = await client.query<{ id: string; name: string | null; scope: TokenScope; machine_id: string | null; created_at: Date; last_used_at: Date | null; revoked_at: Date | null }>(
    'SELECT id, name, scope, machine_id, created_at, last_used_at, revoked_at FROM tokens ORDER BY created_at, id',
  );
  return rows.map((row) => ({
    id: row.id,
    name: row.name,
    scope: row.scope,
    machine_id: row.machine_id,
    created_at: row.created_at.toISOString(),
    last_used_at: row.last_used_at?.toISOString() ?? null,
    revoked_at: row.revoked_at?.toISOString() ?? null,
  }));
}

/** Revokes the token; false when there is no such token or it was already revoked. */
export async function revokeToken(client: pg.ClientBase, id: string): Promise<boolean> {
  const { rowCount } = await client.query('UPDATE tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL', [id]);
  return rowCount === 1;
}
