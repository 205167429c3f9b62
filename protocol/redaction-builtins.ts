import type { RedactionRule } from './redaction.js';

/**
 * The built-in secret shapes. Every pattern is linear-time on any input: no nested unbounded
 * quantifiers, no adjacent quantifiers that can share text, each scan stops at a delimiter, and a
 * scan that must look back for context (`--`, `name:`) does so only once the keyword has matched.
 */

/** Values that name or mask a secret without being one: `$VAR`, `${VAR}`, `****`, `<password>`, `null`... */
export const PLACEHOLDER = String.raw`(?:\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|\*+|<[^<>\r\n]*>|null|none|nil|true|false|undefined)`;
/** At the start of a value: not a placeholder standing alone. */
const NOT_PLACEHOLDER = String.raw`(?!${PLACEHOLDER}(?:["'\s&,;@]|$))`;

/** Names a secret when a key ends with one. Bare `pwd` is left out: `PWD=/home/...` is in every `env` dump. */
const SECRET_NAME = String.raw`(?:password|passwd|passphrase|[_-]pwd|secret(?:[_-]?key)?|token|api[_-]?key)`;
/** The same after `--` on a command line, where `--pwd` cannot be the working directory. */
const SECRET_FLAG = String.raw`(?:password|passwd|passphrase|pwd|secret(?:[_-]?key)?|token|api[_-]?key)`;
/** `=`, `:`, `:=` (Go), `=>` (Ruby, PHP), spaces around. */
const ASSIGN = String.raw`["']?[ \t]*(?::=|=>|[:=])[ \t]*`;
/** An unquoted value: a run up to a space, quote, `&` or `;`, commas inside it included (`Pa55,word`), a trailing one not. */
const BARE_VALUE = String.raw`[^\s"'&,;]+(?:,+[^\s"'&,;]+)*`;
/** A value: the inside of a "..." or '...' string (escapes included), else a bare value. */
const VALUE = String.raw`["']?${NOT_PLACEHOLDER}((?<=")(?:[^"\\\r\n]|\\.)+|(?<=')(?:[^'\\\r\n]|\\.)+|(?<!["'])${BARE_VALUE})`;
/** After a secret name that is the value of a `name` or `key` field: the `value` field that follows it (JSON, YAML). */
const NAME_VALUE_PAIR = String.raw`(?<=\b(?:name|key)["']?[ \t]*[:=][ \t]*["']?[A-Za-z0-9_.-]{0,80})["']?[ \t]*(?:,[ \t]*)?(?:\r?\n[ \t]*(?:-[ \t]*)?)?["']?value${ASSIGN}`;
/** After a secret flag: its value as the next word, or as the next element of a written-out argv list (`"--password", "x"`). */
const FLAG_VALUE = String.raw`(?<=--[A-Za-z0-9_-]{0,60})(?:[ \t]+(?!-)|["'][ \t]*,[ \t]*(?=["'](?!-)))`;

/** Up to 40 words of one shell command (no `|`, `;`, `&`) after the program name, none of them starting like `flag`. */
const wordsBefore = (flag: string) => String.raw`(?:[ \t]+(?!${flag})[^\s|;&]+){0,40}[ \t]+`;
/** A `user:password` argument, quoted or not: the password is group 1, 2 or 3. */
const USER_PASSWORD = String.raw`(?:"[^"\s:]*:${NOT_PLACEHOLDER}([^"\r\n]+)"|'[^'\s:]*:${NOT_PLACEHOLDER}([^'\r\n]+)'|[^\s"':]*:${NOT_PLACEHOLDER}([^\s"']+))`;

const PEM_LABEL = String.raw`(?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?`;
/** Newline, or a `\n` escape when the key sits inside a JSON or Python string. */
const PEM_NEWLINE = String.raw`(?:\r?\n|\\(?:r\\)?n)`;

/** A word in any case, as a case-sensitive pattern: the prefilters are joined into one scan, which must not need the `i` flag (it makes that scan twice as slow). */
const anyCase = (word: string) => word.replace(/[a-z]/gi, (letter) => `[${letter.toUpperCase()}${letter.toLowerCase()}]`);
const AUTHORIZATION = anyCase('authorization');

/**
 * What every match of a built-in rule contains. Most texts (outputs, commands) hold none of these,
 * and one scan for all of them is far cheaper than the full patterns.
 */
const PREFILTERS: Record<string, RegExp> = {
  'private-key': /-----BEGIN /,
  'aws-access-key-id': /AKIA|ASIA/,
  'github-token': /gh[pousr]_|github_pat_/,
  'gitlab-token': /gl(?:pat|dt|rt|ptt|soat)-/,
  'slack-token': /xox[abposr]-/,
  'aws-secret-key': new RegExp(`${anyCase('secret')}[_-]?${anyCase('access')}[_-]?${anyCase('key')}`),
  'bearer-token': new RegExp(AUTHORIZATION),
  'basic-auth': new RegExp(AUTHORIZATION),
  'url-credentials': /:\/\/[^\s/?#]*@/,
  'curl-user': /curl/,
  'mysql-password': /mysql|mariadb/,
  'password-assignment': new RegExp(
    `${anyCase('pass')}(?:${anyCase('word')}|${anyCase('wd')}|${anyCase('phrase')})|${['pwd', 'secret', 'token'].map(anyCase).join('|')}|${anyCase('api')}[_-]?${anyCase('key')}`,
  ),
};

interface BuiltinShape {
  pattern: string;
  flags: string;
  /** The capture groups that may hold the secret (alternatives), default the whole match. */
  secretGroups?: number[];
  secretKey?: RegExp;
  secretFlag?: RegExp;
}

function builtin(name: string, description: string, shape: BuiltinShape): RedactionRule {
  return {
    name,
    description,
    source: 'builtin',
    pattern: new RegExp(shape.pattern, `gd${shape.flags}`),
    secretGroups: shape.secretGroups ?? [0],
    secretKey: shape.secretKey,
    secretFlag: shape.secretFlag,
    prefilter: PREFILTERS[name],
  };
}

/** Applied in this order: specific token shapes before the generic ones, so the marker names the most specific rule. */
export const BUILTIN_REDACTION_RULES: readonly RedactionRule[] = Object.freeze([
  builtin(
    'private-key',
    'PEM and PGP private key blocks (RSA, EC, DSA, OPENSSH, ENCRYPTED, PGP, plain), BEGIN line to END line; without an END line, the key lines that follow BEGIN',
    {
      // The body stops at the next "-----", so each BEGIN scans only up to the following armor line.
      pattern: String.raw`-----BEGIN ${PEM_LABEL}-----(?:[^-]*(?:-(?!----)[^-]*)*-----END ${PEM_LABEL}-----|(?:${PEM_NEWLINE}(?:[A-Za-z][A-Za-z-]*:[^\r\n\\]*|[A-Za-z0-9+/=]*(?![^\r\n\\])))*)`,
      flags: '',
    },
  ),
  builtin('aws-access-key-id', 'AWS access key ids: AKIA or ASIA followed by 16 upper-case letters or digits', {
    pattern: String.raw`(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])`,
    flags: '',
  }),
  builtin('github-token', 'GitHub tokens: ghp_, gho_, ghu_, ghs_, ghr_ followed by 36 or more letters and digits, and github_pat_ fine-grained tokens', {
    pattern: String.raw`(?<![A-Za-z0-9])(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})`,
    flags: '',
  }),
  builtin('gitlab-token', 'GitLab personal, deploy, runner, trigger and service account tokens: glpat-, gldt-, glrt-, glptt-, glsoat- followed by 20 or more characters', {
    pattern: String.raw`(?<![A-Za-z0-9])gl(?:pat|dt|rt|ptt|soat)-[A-Za-z0-9_-]{20,}(?:\.[A-Za-z0-9_-]+)*`,
    flags: '',
  }),
  builtin('slack-token', 'Slack tokens: xoxa-, xoxb-, xoxp-, xoxo-, xoxs-, xoxr- followed by 10 or more characters', {
    pattern: String.raw`(?<![A-Za-z0-9])xox[abposr]-[A-Za-z0-9-]{10,}`,
    flags: '',
  }),
  builtin('aws-secret-key', 'AWS secret access keys: the 40-character value of aws_secret_access_key, AWS_SECRET_ACCESS_KEY or SecretAccessKey after = or :, quoted or not', {
    pattern: String.raw`(?:aws[_-]?)?secret[_-]?access[_-]?key${ASSIGN}["']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])`,
    flags: 'i',
    secretGroups: [1],
    secretKey: /^(?:aws[_-]?)?secret[_-]?access[_-]?key$/i,
  }),
  builtin(
    'bearer-token',
    'The token of an "Authorization: Bearer <token>" header (any case, also as "authorization": "Bearer ..."); in structured data, the whole value of an Authorization key',
    {
      pattern: String.raw`authorization${ASSIGN}["']?bearer[ \t]+([A-Za-z0-9\-._~+/]+=*)`,
      flags: 'i',
      secretGroups: [1],
      secretKey: /^(?:proxy-)?authorization$/i,
    },
  ),
  builtin('basic-auth', 'The base64 user:password of an "Authorization: Basic <credentials>" header (any case, also Proxy-Authorization and as "authorization": "Basic ...")', {
    pattern: String.raw`authorization${ASSIGN}["']?basic[ \t]+([A-Za-z0-9+/]+=*)`,
    flags: 'i',
    secretGroups: [1],
  }),
  builtin('url-credentials', 'The password in the user info of a URL, scheme://user:password@host (git remotes, database, proxy and registry URLs); the user name and host stay', {
    // Up to the last "@" before the path: a password holding a raw "@" is covered whole.
    pattern: String.raw`:\/\/[^\s/?#@:"'<>]*:(?!${PLACEHOLDER}@)([^\s/?#"'<>]+)@`,
    flags: '',
    secretGroups: [1],
  }),
  builtin('curl-user', 'The password of curl -u user:password, -uuser:password or --user user:password, quoted or not; the user name stays', {
    pattern: String.raw`\bcurl\b${wordsBefore('-u|--user[ \\t=]')}(?:-u[ \t]*|--user(?:[ \t]+|=))${USER_PASSWORD}`,
    flags: '',
    secretGroups: [1, 2, 3],
  }),
  builtin('mysql-password', 'The password glued to -p in a mysql, mysqldump, mysqladmin or mariadb command (-pSecret, -p"Secret"); a bare -p, which prompts, and the word after it stay', {
    pattern: String.raw`\b(?:mysql|mariadb)[a-z_-]*${wordsBefore('-p')}-p(?:"([^"\r\n]+)"|'([^'\r\n]+)'|${NOT_PLACEHOLDER}([^\s"'|;&]+))`,
    flags: '',
    secretGroups: [1, 2, 3],
  }),
  builtin(
    'password-assignment',
    'The value assigned to a name ending in password, passwd, passphrase, _pwd, secret, secret_key, token or api_key: key=value, key: value, "key": "value", key := value, key => value, --key value, "--key", "value", and a "value" after such a "name"; placeholders ($VAR, ${VAR}, ****, <...>, null, true, false) and empty values are kept',
    {
      pattern: String.raw`(?:${SECRET_NAME}(?:${ASSIGN}|${NAME_VALUE_PAIR})|${SECRET_FLAG}${FLAG_VALUE})${VALUE}`,
      flags: 'i',
      secretGroups: [1],
      secretKey: new RegExp(`${SECRET_NAME}$`, 'i'),
      secretFlag: new RegExp(`^--[A-Za-z0-9_-]*${SECRET_FLAG}$`, 'i'),
    },
  ),
]);
