import { z } from 'zod';
import type { RedactionRuleInfo } from './methods.js';

/**
 * Secret redaction, applied by the daemon to every text of a task before it is hashed, stored or
 * pushed. A secret span becomes `[REDACTED:<rule name>]`; the text around it stays, and nothing
 * derived from the secret (no digest, no length) is kept: a digest of a short password would let
 * anyone test guesses.
 *
 * Every built-in pattern is linear-time on any input: no nested unbounded quantifiers, no
 * alternatives that can both match the same text, each scan stops at a delimiter. Redacting twice
 * changes nothing: a match whose secret overlaps an existing marker is left alone.
 */
export interface RedactionRule {
  name: string;
  description: string;
  source: 'builtin' | 'config';
  /** Global (`g`) with match indices (`d`), so the secret group's span is known. */
  pattern: RegExp;
  /** The capture group that is the secret (0: the whole match). */
  secretGroup: number;
  /** Object keys whose whole string (or number) value is this rule's secret, e.g. `{"password": "..."}`. */
  secretKey?: RegExp;
  /** A cheap test that any match needs (a keyword or prefix); texts without it skip the full pattern. */
  prefilter?: RegExp;
}

export function redactionMarker(ruleName: string): string {
  return `[REDACTED:${ruleName}]`;
}

const MARKER = /\[REDACTED:[a-z0-9]+(?:-[a-z0-9]+)*\]/g;
const MARKER_ONLY = new RegExp(`^${MARKER.source}$`);

/** Values that name or mask a secret without being one: `$VAR`, `${VAR}`, `****`, `<password>`, `null`... */
const PLACEHOLDER = String.raw`(?:\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|\*+|<[^<>\r\n]*>|null|none|nil|true|false|undefined)`;
const PLACEHOLDER_VALUE = new RegExp(`^${PLACEHOLDER}$`, 'i');

/** Names a secret when a key ends with one. Bare `pwd` is left out: `PWD=/home/...` is in every `env` dump. */
const SECRET_NAME = String.raw`(?:password|passwd|passphrase|[_-]pwd|secret(?:[_-]?key)?|token|api[_-]?key)`;
/** The same after `--` on a command line, where `--pwd` cannot be the working directory. */
const SECRET_FLAG = String.raw`(?:password|passwd|passphrase|pwd|secret(?:[_-]?key)?|token|api[_-]?key)`;
/** `=`, `:`, `:=` (Go), `=>` (Ruby, PHP), spaces around. */
const ASSIGN = String.raw`["']?[ \t]*(?::=|=>|[:=])[ \t]*`;
/** A value: the inside of a "..." or '...' string (escapes included), else a run up to a space, quote, `&`, `,` or `;`. */
const VALUE = String.raw`["']?(?!${PLACEHOLDER}(?:["'\s&,;]|$))((?<=")(?:[^"\\\r\n]|\\.)+|(?<=')(?:[^'\\\r\n]|\\.)+|(?<!["'])[^\s"'&,;]+)`;

const PEM_LABEL = String.raw`(?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?`;
/** Newline, or a `\n` escape when the key sits inside a JSON or Python string. */
const PEM_NEWLINE = String.raw`(?:\r?\n|\\(?:r\\)?n)`;

/**
 * What every match of a built-in rule contains. Most texts (outputs, commands) hold none of these,
 * and a plain scan for them is far cheaper than the full patterns with their lookbehinds.
 */
const PREFILTERS: Record<string, RegExp> = {
  'private-key': /-----BEGIN /,
  'aws-access-key-id': /AKIA|ASIA/,
  'github-token': /gh[pousr]_|github_pat_/,
  'gitlab-token': /gl(?:pat|dt|rt|ptt|soat)-/,
  'slack-token': /xox[abposr]-/,
  'aws-secret-key': /secret[_-]?access[_-]?key/i,
  'bearer-token': /authorization/i,
  'password-assignment': /pass|pwd|secret|token|api[_-]?key/i,
};

function builtin(name: string, description: string, pattern: string, flags: string, secretGroup = 0, secretKey?: RegExp): RedactionRule {
  return { name, description, source: 'builtin', pattern: new RegExp(pattern, `gd${flags}`), secretGroup, secretKey, prefilter: PREFILTERS[name] };
}

/** Applied in this order: specific token shapes before the generic `password=` rule, so the marker names the most specific rule. */
export const BUILTIN_REDACTION_RULES: readonly RedactionRule[] = Object.freeze([
  builtin(
    'private-key',
    'PEM and PGP private key blocks (RSA, EC, DSA, OPENSSH, ENCRYPTED, PGP, plain), BEGIN line to END line; without an END line, the key lines that follow BEGIN',
    // The body stops at the next "-----", so each BEGIN scans only up to the following armor line.
    String.raw`-----BEGIN ${PEM_LABEL}-----(?:[^-]*(?:-(?!----)[^-]*)*-----END ${PEM_LABEL}-----|(?:${PEM_NEWLINE}(?:[A-Za-z][A-Za-z-]*:[^\r\n\\]*|[A-Za-z0-9+/=]*(?![^\r\n\\])))*)`,
    '',
  ),
  builtin('aws-access-key-id', 'AWS access key ids: AKIA or ASIA followed by 16 upper-case letters or digits', String.raw`(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])`, ''),
  builtin(
    'github-token',
    'GitHub tokens: ghp_, gho_, ghu_, ghs_, ghr_ followed by 36 or more letters and digits, and github_pat_ fine-grained tokens',
    String.raw`(?<![A-Za-z0-9])(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})`,
    '',
  ),
  builtin(
    'gitlab-token',
    'GitLab personal, deploy, runner, trigger and service account tokens: glpat-, gldt-, glrt-, glptt-, glsoat- followed by 20 or more characters',
    String.raw`(?<![A-Za-z0-9])gl(?:pat|dt|rt|ptt|soat)-[A-Za-z0-9_-]{20,}(?:\.[A-Za-z0-9_-]+)*`,
    '',
  ),
  builtin('slack-token', 'Slack tokens: xoxa-, xoxb-, xoxp-, xoxo-, xoxs-, xoxr- followed by 10 or more characters', String.raw`(?<![A-Za-z0-9])xox[abposr]-[A-Za-z0-9-]{10,}`, ''),
  builtin(
    'aws-secret-key',
    'AWS secret access keys: the 40-character value of aws_secret_access_key, AWS_SECRET_ACCESS_KEY or SecretAccessKey after = or :, quoted or not',
    String.raw`(?:aws[_-]?)?secret[_-]?access[_-]?key${ASSIGN}["']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])`,
    'i',
    1,
    /^(?:aws[_-]?)?secret[_-]?access[_-]?key$/i,
  ),
  builtin(
    'bearer-token',
    'The token of an "Authorization: Bearer <token>" header (any case, also as "authorization": "Bearer ..."); in structured data, the whole value of an Authorization key',
    String.raw`authorization${ASSIGN}["']?bearer[ \t]+([A-Za-z0-9\-._~+/]+=*)`,
    'i',
    1,
    /^(?:proxy-)?authorization$/i,
  ),
  builtin(
    'password-assignment',
    'The value assigned to a name ending in password, passwd, passphrase, _pwd, secret, secret_key, token or api_key: key=value, key: value, "key": "value", key := value, key => value, --key value; placeholders ($VAR, ${VAR}, ****, <...>, null, true, false) and empty values are kept',
    String.raw`(?:${SECRET_NAME}${ASSIGN}|(?<=--[A-Za-z0-9-]{0,40})${SECRET_FLAG}[ \t]+(?!-))${VALUE}`,
    'i',
    1,
    new RegExp(`${SECRET_NAME}$`, 'i'),
  ),
]);

/** A rule from the daemon's config file, key "redaction_rules". */
export interface UserRuleConfig {
  name: string;
  pattern: string;
  flags?: string;
  description?: string;
  secret_group?: number;
}

const RULE_NAME = /^[a-z0-9]+(?:-[a-z0-9]+)*$/;

const UserRuleSchema = z.strictObject({
  name: z.string().max(64).regex(RULE_NAME, 'must be lower-case letters and digits joined by single hyphens, like "corp-api-key"'),
  pattern: z.string().min(1, 'must be a non-empty regular expression'),
  flags: z.string().regex(/^[imsuv]*$/, 'may hold only i, m, s, u, v (g and d are always added)').optional(),
  description: z.string().max(300).optional(),
  secret_group: z.int().min(0).optional(),
});

/**
 * Validates and compiles the config's "redaction_rules" (a list; absent means none). Throws an
 * Error naming the first bad rule and what to change.
 */
export function compileUserRules(config: unknown): RedactionRule[] {
  if (config === undefined || config === null) return [];
  if (!Array.isArray(config)) {
    throw new Error('"redaction_rules" must be a list of rules like {"name": "corp-key", "pattern": "CORP-[0-9]{8}"}');
  }
  const taken = new Set(BUILTIN_REDACTION_RULES.map((rule) => rule.name));
  return config.map((entry: unknown, index) => {
    const label = ruleLabel(entry, index);
    const parsed = UserRuleSchema.safeParse(entry);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const field = issue.path.length > 0 ? `"${issue.path.join('.')}" ` : '';
      throw new Error(`${label}: ${field}${issue.message}`);
    }
    const rule = compileUserRule(parsed.data, label);
    if (taken.has(rule.name)) {
      const whose = BUILTIN_REDACTION_RULES.some((b) => b.name === rule.name) ? 'a built-in rule' : 'an earlier rule';
      throw new Error(`${label}: the name is already used by ${whose}; choose another name`);
    }
    taken.add(rule.name);
    return rule;
  });
}

function ruleLabel(entry: unknown, index: number): string {
  const name = (entry as { name?: unknown } | null)?.name;
  return `redaction rule #${index + 1}${typeof name === 'string' ? ` "${name}"` : ''}`;
}

function compileUserRule(config: z.infer<typeof UserRuleSchema>, label: string): RedactionRule {
  const flags = config.flags ?? '';
  let pattern: RegExp;
  try {
    pattern = new RegExp(config.pattern, `gd${flags}`);
  } catch (error) {
    throw new Error(`${label}: "pattern" is not a valid JavaScript regular expression (${(error as Error).message})`);
  }
  if (new RegExp(config.pattern, flags).test('')) {
    throw new Error(`${label}: "pattern" matches the empty string; make it require at least one character`);
  }
  const secretGroup = config.secret_group ?? 0;
  const groups = new RegExp(`${config.pattern}|`, flags).exec('')!.length - 1;
  if (secretGroup > groups) {
    throw new Error(`${label}: "secret_group" is ${secretGroup} but the pattern has ${groups} capture group${groups === 1 ? '' : 's'}`);
  }
  return {
    name: config.name,
    description: config.description ?? `matches /${config.pattern}/${flags}`,
    source: 'config',
    pattern,
    secretGroup,
  };
}

/** Replaces every secret span of every rule, in rule order, by the rule's marker. */
export function redactText(text: string, rules: readonly RedactionRule[]): string {
  let result = text;
  for (const rule of rules) result = redactWithRule(result, rule);
  return result;
}

function redactWithRule(text: string, rule: RedactionRule): string {
  if (rule.prefilter && !rule.prefilter.test(text)) return text;
  const markers = text.includes('[REDACTED:') ? [...text.matchAll(MARKER)].map((m) => [m.index, m.index + m[0].length]) : [];
  let nextMarker = 0;
  let redacted = '';
  let copiedUpTo = 0;
  // matchAll works on a copy of the regex, so rules shared across calls keep no lastIndex state.
  for (const match of text.matchAll(rule.pattern)) {
    const span = match.indices?.[rule.secretGroup];
    if (!span || span[0] === span[1]) continue;
    const [start, end] = span;
    while (nextMarker < markers.length && markers[nextMarker][1] <= start) nextMarker++;
    if (nextMarker < markers.length && markers[nextMarker][0] < end) continue; // already redacted
    redacted += text.slice(copiedUpTo, start) + redactionMarker(rule.name);
    copiedUpTo = end;
  }
  return copiedUpTo === 0 ? text : redacted + text.slice(copiedUpTo);
}

/**
 * Redacts every string inside arrays and objects, object keys included: a token used as a key
 * would otherwise be stored as is. Keys that become equal after redaction get ` #2`, ` #3`... so
 * no value is lost. A string or number under a key that names a secret (`"password"`,
 * `"Authorization"`, `"aws_secret_access_key"`) is replaced whole, since no `key=` context is left
 * inside the value for the text rules to see.
 */
export function redactValue<T>(value: T, rules: readonly RedactionRule[]): T {
  return redactJson(value, rules) as T;
}

function redactJson(value: unknown, rules: readonly RedactionRule[]): unknown {
  if (typeof value === 'string') return redactText(value, rules);
  if (Array.isArray(value)) return value.map((item) => redactJson(item, rules));
  if (value === null || typeof value !== 'object') return value;
  const redacted: Record<string, unknown> = {};
  for (const [key, member] of Object.entries(value)) {
    const keyRule = rules.find((rule) => rule.secretKey?.test(key));
    const memberRedacted = keyRule && isSecretValue(member) ? redactionMarker(keyRule.name) : redactJson(member, rules);
    // defineProperty: a "__proto__" key from JSON must stay a plain member, not set the prototype.
    Object.defineProperty(redacted, uniqueKey(redacted, redactText(key, rules)), { value: memberRedacted, enumerable: true, writable: true, configurable: true });
  }
  return redacted;
}

function isSecretValue(value: unknown): boolean {
  if (typeof value === 'number') return true;
  return typeof value === 'string' && value !== '' && !PLACEHOLDER_VALUE.test(value) && !MARKER_ONLY.test(value);
}

function uniqueKey(target: object, key: string): string {
  if (!Object.hasOwn(target, key)) return key;
  let n = 2;
  while (Object.hasOwn(target, `${key} #${n}`)) n++;
  return `${key} #${n}`;
}

/** What `redaction_rules` answers and `taskhistory redaction-rules` lists. */
export function redactionRuleInfo(rules: readonly RedactionRule[]): RedactionRuleInfo[] {
  return rules.map(({ name, description, source }) => ({ name, description, source }));
}
