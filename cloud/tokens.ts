import { createHash } from 'node:crypto';
import { readSecretFile, SecretFileError } from '../node/secret-file.js';
import { z } from 'zod';

/**
 * Who a bearer token speaks for. A machine token pushes and reads its own machine only; admin and
 * viewer tokens read every machine and push nothing (a viewer will never manage tokens, should admin
 * gain that right). Tokens come from the tokens file
 * (`{"tokens": [{"token": "…", "machine_id": "…"}, {"token": "…", "admin": true}]}`) or, with the
 * PostgreSQL backend, from the database (token-store.ts).
 */
export type Principal = { kind: 'machine'; machineId: string } | { kind: 'admin' } | { kind: 'viewer' };

/** A checked token: who it speaks for, and its id to re-check open connections against revocation. */
export interface Authenticated {
  principal: Principal;
  tokenId: string;
}

export interface Authenticator {
  /** The token behind an `Authorization: Bearer <token>` header; null when missing, unknown or revoked. Throws AuthUnavailable when it cannot be checked. */
  authenticate(authorization: string | undefined): Promise<Authenticated | null>;
  /** Of these token ids, the ones no longer valid (revoked since they were checked). */
  revokedAmong(tokenIds: string[]): Promise<Set<string>>;
}

/** The token could not be checked (database unreachable): not a bad token, so never answered 401. */
export class AuthUnavailable extends Error {
  constructor(
    message: string,
    readonly retryAfterMs: number,
  ) {
    super(message);
  }
}

const TokensFileSchema = z.strictObject({
  tokens: z.array(
    z.union([
      z.strictObject({ token: z.string().min(1), machine_id: z.string().min(1).max(200) }),
      z.strictObject({ token: z.string().min(1), admin: z.literal(true) }),
    ]),
  ),
});

export class TokensFileError extends Error {}

/** Tokens are kept only as SHA-256 digests, so a lookup takes the same path whatever the guess. */
export const digestOf = (token: string) => createHash('sha256').update(token, 'utf8').digest('hex');

/** The token of an `Authorization: Bearer <token>` header, or null. */
export function bearerTokenOf(authorization: string | undefined): string | null {
  return /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '')?.[1] ?? null;
}

export class TokenRegistry implements Authenticator {
  private constructor(private readonly byDigest: Map<string, Principal>) {}

  /** Reads and checks the tokens file; throws TokensFileError naming the file and the fix. */
  static load(path: string): TokenRegistry {
    let text: string;
    try {
      text = readSecretFile(path, { what: 'tokens file' });
    } catch (error) {
      throw error instanceof SecretFileError ? new TokensFileError(error.message) : error;
    }
    let parsed: z.infer<typeof TokensFileSchema>;
    try {
      parsed = TokensFileSchema.parse(JSON.parse(text));
    } catch (error) {
      const detail = error instanceof z.ZodError ? z.prettifyError(error) : (error as Error).message;
      throw new TokensFileError(
        `tokens file ${path} is not {"tokens": [{"token", "machine_id"} | {"token", "admin": true}]}: ${detail}`,
      );
    }
    const byDigest = new Map<string, Principal>();
    for (const [index, entry] of parsed.tokens.entries()) {
      const digest = digestOf(entry.token);
      if (byDigest.has(digest)) throw new TokensFileError(`tokens file ${path}: tokens[${index}] repeats an earlier token`);
      byDigest.set(digest, 'admin' in entry ? { kind: 'admin' } : { kind: 'machine', machineId: entry.machine_id });
    }
    return new TokenRegistry(byDigest);
  }

  async authenticate(authorization: string | undefined): Promise<Authenticated | null> {
    const token = bearerTokenOf(authorization);
    if (token === null) return null;
    const digest = digestOf(token);
    const principal = this.byDigest.get(digest);
    return principal ? { principal, tokenId: `file:${digest.slice(0, 16)}` } : null;
  }

  /** The file is read once at start: its tokens stay valid until the endpoint restarts. */
  async revokedAmong(): Promise<Set<string>> {
    return new Set();
  }
}

/** Checks each token against the sources in turn (a tokens file, then the database). */
export class AuthenticatorChain implements Authenticator {
  constructor(private readonly sources: Authenticator[]) {}

  async authenticate(authorization: string | undefined): Promise<Authenticated | null> {
    for (const source of this.sources) {
      const found = await source.authenticate(authorization);
      if (found) return found;
    }
    return null;
  }

  async revokedAmong(tokenIds: string[]): Promise<Set<string>> {
    const revoked = new Set<string>();
    for (const source of this.sources) for (const id of await source.revokedAmong(tokenIds)) revoked.add(id);
    return revoked;
  }
}

/** Why the principal may not read the machine's records, or null when it may. */
export function readRefusal(principal: Principal, machineId: string): string | null {
  if (principal.kind !== 'machine' || principal.machineId === machineId) return null;
  return `this token belongs to machine ${principal.machineId}, not ${machineId}`;
}

/** Why the principal may not push to the machine, or null when it may. */
export function pushRefusal(principal: Principal, machineId: string): string | null {
  if (principal.kind !== 'machine') return `${principal.kind} tokens read, they do not push`;
  return readRefusal(principal, machineId);
}
