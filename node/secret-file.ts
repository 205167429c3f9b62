import { readFileSync, statSync } from 'node:fs';

/** A secret file (a token, a tokens list) that cannot be used; the message names the file and the fix. */
export class SecretFileError extends Error {}

export interface SecretFileOptions {
  /** What the file is, for messages: "cloud token file", "tokens file". */
  what: string;
  /** Refuse a file that group or others may access, as ssh does with keys (default true). */
  ownerOnly?: boolean;
}

/** The whole text of a secret file, after checking that only its owner may read it. */
export function readSecretFile(path: string, { what, ownerOnly = true }: SecretFileOptions): string {
  let mode: number;
  let text: string;
  try {
    mode = statSync(path).mode;
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const { code, message } = error as NodeJS.ErrnoException;
    throw new SecretFileError(`cannot read the ${what} ${path} (${code ?? message})`);
  }
  if (ownerOnly && (mode & 0o077) !== 0) {
    throw new SecretFileError(
      `the ${what} ${path} is accessible by group or others (mode ${(mode & 0o777).toString(8)}); run: chmod 600 ${path}`,
    );
  }
  return text;
}

/** The secret on the first line of a file (surrounding blanks trimmed); an empty first line is refused. */
export function readSecretLine(path: string, options: SecretFileOptions): string {
  const secret = readSecretFile(path, options).split('\n')[0].trim();
  if (secret === '') throw new SecretFileError(`the first line of the ${options.what} ${path} holds no token: put the token there`);
  return secret;
}
