import { z } from 'zod';
import type { RedactionRuleInfo } from './methods.js';
import { BUILTIN_REDACTION_RULES, PLACEHOLDER } from './redaction-builtins.js';

export { BUILTIN_REDACTION_RULES };

/**
 * Secret redaction, applied by the daemon to every text of a task before it is hashed, stored or
 * pushed. A secret span becomes `[REDACTED:<rule name>]`; the text around it stays, and nothing
 * derived from the secret (no digest, no length) is kept: a digest of a short password would let
 * anyone test guesses. Redacting twice changes nothing: a match whose secret overlaps an existing
 * marker is left alone. The built-in shapes are in redaction-builtins.ts.
 */
export interface RedactionRule {
  name: string;
  description: string;
  source: 'builtin' | 'config';
  /** Global (`g`) with match indices (`d`), so the secret group's span is known. */
  pattern: RegExp;
  /** The capture groups that may be the secret, one per alternative of the pattern: the first that took part is (0: the whole match). */
  secretGroups: readonly number[];
  /** Object keys whose whole string (or number) value is this rule's secret, e.g. `{"password": "..."}`; also the `name` of a `{name, value}` pair. */
  secretKey?: RegExp;
  /** An argv element whose next element is this rule's secret, e.g. `["mysql", "--password", "..."]`. */
  secretFlag?: RegExp;
  /** A cheap test that any match needs (a keyword or prefix); texts without it skip the full pattern. */
  prefilter?: RegExp;
}

export function redactionMarker(ruleName: string): string {
  return `[REDACTED:${ruleName}]`;
}

const MARKER = /\[REDACTED:[a-z0-9]+(?:-[a-z0-9]+)*\]/g;
const MARKER_ONLY = new RegExp(`^${MARKER.source}$`);
const PLACEHOLDER_VALUE = new RegExp(`^${PLACEHOLDER}$`, 'i');

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
    secretGroups: [secretGroup],
  };
}

/**
 * A rule list prepared once (the daemon builds its list once per (re)load): one scan for the
 * prefilters of all rules that have one, so a text holding no candidate at all (most outputs) is
 * read once, not once per rule; and the few rules that name secret keys or flags, so structured
 * values do not walk every rule for every key and element.
 */
interface PreparedRules {
  all: readonly RedactionRule[];
  anyCandidate: RegExp | null;
  withSecretKey: RedactionRule[];
  withSecretFlag: RedactionRule[];
}

const preparedOf = new WeakMap<readonly RedactionRule[], PreparedRules>();

function prepared(rules: readonly RedactionRule[]): PreparedRules {
  let ready = preparedOf.get(rules);
  if (ready === undefined) {
    const sources = new Set(rules.flatMap((rule) => (rule.prefilter ? [`(?:${rule.prefilter.source})`] : [])));
    // Built-in prefilters spell keywords in any case without the i flag; one that has it makes the whole scan case-insensitive (slower, still right).
    const caseInsensitive = rules.some((rule) => rule.prefilter?.flags.includes('i'));
    ready = {
      all: rules,
      anyCandidate: sources.size > 0 ? new RegExp([...sources].join('|'), caseInsensitive ? 'i' : '') : null,
      withSecretKey: rules.filter((rule) => rule.secretKey),
      withSecretFlag: rules.filter((rule) => rule.secretFlag),
    };
    preparedOf.set(rules, ready);
  }
  return ready;
}

/** Replaces every secret span of every rule, in rule order, by the rule's marker. */
export function redactText(text: string, rules: readonly RedactionRule[]): string {
  return redactPreparedText(text, prepared(rules));
}

function redactPreparedText(text: string, rules: PreparedRules): string {
  const mayMatch = rules.anyCandidate === null || rules.anyCandidate.test(text);
  let result = text;
  for (const rule of rules.all) {
    if (rule.prefilter && (!mayMatch || !rule.prefilter.test(result))) continue;
    result = redactWithRule(result, rule);
  }
  return result;
}

function redactWithRule(text: string, rule: RedactionRule): string {
  const markers = text.includes('[REDACTED:') ? [...text.matchAll(MARKER)].map((m) => [m.index, m.index + m[0].length]) : [];
  let nextMarker = 0;
  let redacted = '';
  let copiedUpTo = 0;
  // matchAll works on a copy of the regex, so rules shared across calls keep no lastIndex state.
  for (const match of text.matchAll(rule.pattern)) {
    const span = secretSpan(match, rule);
    if (!span) continue;
    const [start, end] = span;
    while (nextMarker < markers.length && markers[nextMarker][1] <= start) nextMarker++;
    if (nextMarker < markers.length && markers[nextMarker][0] < end) continue; // already redacted
    redacted += text.slice(copiedUpTo, start) + redactionMarker(rule.name);
    copiedUpTo = end;
  }
  return copiedUpTo === 0 ? text : redacted + text.slice(copiedUpTo);
}

function secretSpan(match: RegExpMatchArray, rule: RedactionRule): [number, number] | undefined {
  for (const group of rule.secretGroups) {
    const span = match.indices?.[group];
    if (span && span[0] < span[1]) return span;
  }
  return undefined;
}

/**
 * Redacts every string inside arrays and objects, object keys included: a token used as a key
 * would otherwise be stored as is. Keys that become equal after redaction get ` #2`, ` #3`... so
 * no value is lost. Where the structure itself says "this is a secret" and no `key=` context is
 * left inside the value for the text rules to see, the value is replaced whole:
 * - a string or number (or an array of them) under a key that names a secret: `{"password": "..."}`,
 *   `{"DB_PASSWORD": ["..."]}`, `{"Authorization": "..."}`;
 * - the `value` of a `{name, value}` (or `{key, value}`) pair whose name names a secret, as in
 *   Kubernetes and ECS environments: `{"name": "PGPASSWORD", "value": "..."}`;
 * - the element after a secret flag in an array: `["mysql", "--password", "..."]`.
 */
export function redactValue<T>(value: T, rules: readonly RedactionRule[]): T {
  return redactJson(value, prepared(rules)) as T;
}

function redactJson(value: unknown, rules: PreparedRules): unknown {
  if (typeof value === 'string') return redactPreparedText(value, rules);
  if (Array.isArray(value)) return redactArray(value, rules);
  if (value === null || typeof value !== 'object') return value;
  const pairRule = nameValuePairRule(value, rules);
  const redacted: Record<string, unknown> = {};
  for (const [key, member] of Object.entries(value)) {
    const keyRule = pairRule && VALUE_KEY.test(key) ? pairRule : rules.withSecretKey.find((rule) => rule.secretKey!.test(key));
    const memberRedacted = keyRule ? redactSecretMember(member, keyRule, rules) : redactJson(member, rules);
    // defineProperty: a "__proto__" key from JSON must stay a plain member, not set the prototype.
    Object.defineProperty(redacted, uniqueKey(redacted, redactPreparedText(key, rules)), { value: memberRedacted, enumerable: true, writable: true, configurable: true });
  }
  return redacted;
}

function redactArray(items: unknown[], rules: PreparedRules): unknown[] {
  return items.map((item, index) => {
    const before = items[index - 1];
    const flagRule = typeof before === 'string' ? rules.withSecretFlag.find((rule) => rule.secretFlag!.test(before)) : undefined;
    return flagRule && isSecretValue(item) && !(typeof item === 'string' && item.startsWith('-')) ? redactionMarker(flagRule.name) : redactJson(item, rules);
  });
}

/** Under a key that names a secret: a scalar is the secret; so is every scalar of an array; objects are redacted as usual. */
function redactSecretMember(member: unknown, rule: RedactionRule, rules: PreparedRules): unknown {
  if (isSecretValue(member)) return redactionMarker(rule.name);
  if (Array.isArray(member)) return member.map((item) => redactSecretMember(item, rule, rules));
  return redactJson(member, rules);
}

const NAME_KEY = /^(?:name|key)$/i;
const VALUE_KEY = /^value$/i;

/** The rule whose secret is the `value` of this `{name, value}` pair, if its name names one. */
function nameValuePairRule(object: object, rules: PreparedRules): RedactionRule | undefined {
  let name: unknown;
  let hasValue = false;
  for (const [key, member] of Object.entries(object)) {
    if (NAME_KEY.test(key)) name = member;
    else if (VALUE_KEY.test(key)) hasValue = true;
  }
  if (!hasValue || typeof name !== 'string') return undefined;
  return rules.withSecretKey.find((rule) => rule.secretKey!.test(name));
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
