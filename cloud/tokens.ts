import { createHash } from 'node:crypto';
import { readSecretFile, SecretFileError } from '../node/secret-file.js';
import { z } from 'zod';

/**
 * Who a bearer token speaks for, from the tokens file:
 * `{"tokens": [{"token": "…", "machine_id": "…"}, {"token": "…", "admin": true}]}`.
 * A machine token pushes and reads its own machine only; an admin token reads every machine and pushes nothing.
 */
export type Principal = { kind: 'machine'; machineId: string } | { kind: 'admin' };

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
const digestOf = (token: string) => createHash('sha256').update(token, 'utf8').digest('hex');

export class TokenRegistry {
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

  /** The principal behind an `Authorization: Bearer <token>` header, or null for a missing or unknown token. */
  principalFor(authorization: string | undefined): Principal | null {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
    return match ? (this.byDigest.get(digestOf(match[1])) ?? null) : null;
  }
}

/** Why the principal may not read the machine's records, or null when it may. */
export function readRefusal(principal: Principal, machineId: string): string | null {
  if (principal.kind === 'admin' || principal.machineId === machineId) return null;
  return `this token belongs to machine ${principal.machineId}, not ${machineId}`;
}

/** Why the principal may not push to the machine, or null when it may. */
export function pushRefusal(principal: Principal, machineId: string): string | null {
  if (principal.kind === 'admin') return 'admin tokens read, they do not push';
  return readRefusal(principal, machineId);
}
