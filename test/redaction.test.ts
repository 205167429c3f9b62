import { describe, expect, it } from 'vitest';
import {
  BUILTIN_REDACTION_RULES,
  compileUserRules,
  redactionRuleInfo,
  redactText,
  redactValue,
} from '../protocol/redaction.js';

// Secrets are assembled at run time so that secret scanners do not flag this file.
const GITHUB = `ghp_${'A1b2C3d4'.repeat(4)}E5f6`;
const GITHUB_PAT = `github_pat_${'11ABCDEFG0'.repeat(2)}ab_${'x9Y8z7W6v5'.repeat(5)}abcdefghi`;
const GITLAB = `glpat-${'Zq3xW9vT'.repeat(2)}abcd`;
const SLACK = `xoxb-${'1234567890'}-${'0987654321'}-${'AbCdEfGhIjKlMnOpQrStUvWx'}`;
const AWS_ID = `AKIA${'IOSFODNN7EXAMPLE'}`;
const AWS_SECRET = `wJalrXUtnFEMI/K7MDENG/${'bPxRfiCYEXAMPLEKEY'}`;
const PEM_BODY = 'MIIEowIBAAKCAQEA7bq9Zx3xg0JtY4R2lJ\nq2Z1k3b9m8Yw0T9v1R4dXoL5cT3F2mPq==';
const pem = (label: string) => `-----BEGIN ${label}-----\n${PEM_BODY}\n-----END ${label}-----`;

const M = (rule: string) => `[REDACTED:${rule}]`;
const redact = (text: string) => redactText(text, BUILTIN_REDACTION_RULES);

/** Per built-in rule: [input, expected output] pairs, and inputs that must stay unchanged. */
const CASES: Record<string, { redacts: [string, string][]; keeps: string[] }> = {
  'private-key': {
    redacts: [
      [`key:\n${pem('RSA PRIVATE KEY')}\ndone`, `key:\n${M('private-key')}\ndone`],
      [pem('PRIVATE KEY'), M('private-key')],
      [pem('EC PRIVATE KEY'), M('private-key')],
      [pem('OPENSSH PRIVATE KEY'), M('private-key')],
      [pem('DSA PRIVATE KEY'), M('private-key')],
      [pem('ENCRYPTED PRIVATE KEY'), M('private-key')],
      [pem('PGP PRIVATE KEY BLOCK'), M('private-key')],
      // Encrypted PEM headers are part of the block.
      [`-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,AB12\n\n${PEM_BODY}\n-----END RSA PRIVATE KEY-----`, M('private-key')],
      // `head -3 id_rsa`: no END line; the key lines are still the secret, the prose after them is not.
      [`-----BEGIN OPENSSH PRIVATE KEY-----\n${PEM_BODY}\n(cut by head -3)\nmore`, `${M('private-key')}\n(cut by head -3)\nmore`],
      // Inside a JSON string, with \n escapes.
      [JSON.stringify({ key: `-----BEGIN PRIVATE KEY-----\n${PEM_BODY}\n` }), `{"key":"${M('private-key')}\\n"}`],
    ],
    keeps: [
      '-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----',
      '-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBa\n-----END CERTIFICATE-----',
      'ssh-keygen wrote the private key to ~/.ssh/id_ed25519',
    ],
  },
  'aws-access-key-id': {
    redacts: [
      [`export AWS_ACCESS_KEY_ID=${AWS_ID}`, `export AWS_ACCESS_KEY_ID=${M('aws-access-key-id')}`],
      [`"AccessKeyId": "ASIA${'Q3EGRV4DMXYZ2ABC'}"`, `"AccessKeyId": "${M('aws-access-key-id')}"`],
    ],
    keeps: [`AKIA${'IOSFODNN7EXAMPL'}`, `${AWS_ID}X`, `XAKIA${'IOSFODNN7EXAMPLE'}`, `akia${'iosfodnn7example'}`, 'AKIA is a prefix'],
  },
  'github-token': {
    redacts: [
      [`GITHUB_TOKEN=${GITHUB}`, `GITHUB_TOKEN=${M('github-token')}`],
      [`git clone https://${GITHUB.replace('ghp_', 'gho_')}@github.com/o/r`, `git clone https://${M('github-token')}@github.com/o/r`],
      [`${GITHUB.replace('ghp_', 'ghu_')} ${GITHUB.replace('ghp_', 'ghs_')} ${GITHUB.replace('ghp_', 'ghr_')}`, `${M('github-token')} ${M('github-token')} ${M('github-token')}`],
      [`token ${GITHUB_PAT}.`, `token ${M('github-token')}.`],
    ],
    keeps: [GITHUB.slice(0, -1), GITHUB.replace('ghp_', 'ghx_'), `x${GITHUB}`, 'see github_pat_ tokens in the docs', 'ghp_ prefix'],
  },
  'gitlab-token': {
    redacts: [
      [`PRIVATE-TOKEN: ${GITLAB}`, `PRIVATE-TOKEN: ${M('gitlab-token')}`],
      [`${GITLAB.replace('glpat-', 'gldt-')} ${GITLAB.replace('glpat-', 'glrt-')}`, `${M('gitlab-token')} ${M('gitlab-token')}`],
      [`${GITLAB}.01.0f1a2b3c4 ok`, `${M('gitlab-token')} ok`],
    ],
    keeps: ['glpat-tooShort123', 'glpat-', `xglpat-${'Zq3xW9vT'.repeat(3)}`, 'the glpat prefix'],
  },
  'slack-token': {
    redacts: [
      [`SLACK_BOT_TOKEN=${SLACK}`, `SLACK_BOT_TOKEN=${M('slack-token')}`],
      [`curl -d token=${SLACK.replace('xoxb', 'xoxp')} x`, `curl -d token=${M('slack-token')} x`],
    ],
    keeps: ['xoxb-12345', 'xoxz-1234567890-abcdef', 'xoxb-', 'the xoxb prefix'],
  },
  'aws-secret-key': {
    redacts: [
      [`aws_secret_access_key = ${AWS_SECRET}`, `aws_secret_access_key = ${M('aws-secret-key')}`],
      [`export AWS_SECRET_ACCESS_KEY="${AWS_SECRET}"`, `export AWS_SECRET_ACCESS_KEY="${M('aws-secret-key')}"`],
      [`"SecretAccessKey": "${AWS_SECRET}",`, `"SecretAccessKey": "${M('aws-secret-key')}",`],
      [`aws_secret_access_key:'${AWS_SECRET}'`, `aws_secret_access_key:'${M('aws-secret-key')}'`],
    ],
    keeps: [AWS_SECRET, `aws_secret_access_key=${AWS_SECRET.slice(1)}`, 'aws_secret_access_key=', 'set aws_secret_access_key in ~/.aws/credentials'],
  },
  'bearer-token': {
    redacts: [
      ['Authorization: Bearer abc.def', `Authorization: Bearer ${M('bearer-token')}`],
      ['curl -H "authorization: bearer eyJhbGci.eyJzdWIi.SflKxw-_~+/==" https://api', `curl -H "authorization: bearer ${M('bearer-token')}" https://api`],
      ['{"Authorization": "Bearer tok_123"}', `{"Authorization": "Bearer ${M('bearer-token')}"}`],
      ['Proxy-Authorization: Bearer xyz', `Proxy-Authorization: Bearer ${M('bearer-token')}`],
    ],
    keeps: ['Authorization: Bearer', 'Authorization: Bearer $TOKEN', 'bearer tokens expire after an hour', 'Authorization: Basic'],
  },
  'password-assignment': {
    redacts: [
      ['password=hunter2', `password=${M('password-assignment')}`],
      ['DB_PASSWORD: s3cr3t!', `DB_PASSWORD: ${M('password-assignment')}`],
      ['{"password": "correct horse battery staple"}', `{"password": "${M('password-assignment')}"}`],
      ["{'client_secret': 'it\\'s'}", `{'client_secret': '${M('password-assignment')}'}`],
      ['mysql -u root --password hunter2 db', `mysql -u root --password ${M('password-assignment')} db`],
      ['deploy --db-password=hunter2 --api-key k-123', `deploy --db-password=${M('password-assignment')} --api-key ${M('password-assignment')}`],
      ['https://x/cb?access_token=abc123&state=ok', `https://x/cb?access_token=${M('password-assignment')}&state=ok`],
      ['SECRET_KEY = "django-insecure-x"', `SECRET_KEY = "${M('password-assignment')}"`],
      ['password := "go"; passwd => \'rb\'', `password := "${M('password-assignment')}"; passwd => '${M('password-assignment')}'`],
      ['MYSQL_PWD=hunter2 apiKey: abc', `MYSQL_PWD=${M('password-assignment')} apiKey: ${M('password-assignment')}`],
    ],
    keeps: [
      'password=',
      'Enter your password:',
      '{"password": ""}',
      'the password is wrong; reset the token',
      'password=${DB_PASSWORD} token=$TOKEN secret=******** api_key=<your key>',
      '"token": null, "secret": false',
      'PWD=/home/me OLDPWD=/tmp',
      'max_tokens=100 password_file=/etc/pw --password-file /etc/pw',
      'login --password --verbose',
    ],
  },
};

describe('built-in rules', () => {
  it('have a positive and a negative case for every rule, each with a one-line description', () => {
    expect(Object.keys(CASES).sort()).toEqual(BUILTIN_REDACTION_RULES.map((r) => r.name).sort());
    for (const rule of BUILTIN_REDACTION_RULES) {
      expect(rule.source).toBe('builtin');
      expect(rule.description).toMatch(/^[^\n]{20,}$/);
    }
  });

  for (const [name, { redacts, keeps }] of Object.entries(CASES)) {
    describe(name, () => {
      it.each(redacts)('redacts %j', (input, expected) => {
        expect(redact(input)).toBe(expected);
      });
      it.each(keeps.map((k) => [k]))('keeps %j', (input) => {
        expect(redact(input)).toBe(input);
      });
    });
  }

  it('keeps nothing derived from the secret: same marker whatever the secret length', () => {
    expect(redact('password=a')).toBe(redact('password=a-much-longer-password-value'));
    expect(redact(pem('RSA PRIVATE KEY'))).toBe(redact(`-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----`));
  });

  it('names the most specific rule when a token is assigned to a secret-looking name', () => {
    expect(redact(`token=${GITHUB} password=${SLACK}`)).toBe(`token=${M('github-token')} password=${M('slack-token')}`);
  });

  it('redacts every secret of a mixed text', () => {
    const text = [
      `$ export AWS_ACCESS_KEY_ID=${AWS_ID} AWS_SECRET_ACCESS_KEY=${AWS_SECRET}`,
      `$ curl -H 'Authorization: Bearer ${GITHUB}' -d 'password=p4ss'`,
      pem('EC PRIVATE KEY'),
      `gitlab ${GITLAB}, slack ${SLACK}`,
    ].join('\n');
    const out = redact(text);
    for (const secret of [AWS_ID, AWS_SECRET, GITHUB, 'p4ss', PEM_BODY.slice(0, 20), GITLAB, SLACK]) expect(out).not.toContain(secret);
    for (const rule of BUILTIN_REDACTION_RULES.map((r) => r.name).filter((n) => n !== 'bearer-token')) expect(out).toContain(M(rule));
    expect(out).toContain('$ curl -H \'Authorization: Bearer [REDACTED:github-token]\'');
  });
});

describe('idempotence', () => {
  const inputs = [...Object.values(CASES).flatMap((c) => [...c.redacts.map(([input]) => input), ...c.keeps])];

  it.each(inputs.map((i) => [i]))('redacting %j twice changes nothing the second time', (input) => {
    const once = redact(input);
    expect(redact(once)).toBe(once);
  });

  it('leaves markers already in the text alone, even where a rule would match them', () => {
    const rules = [...BUILTIN_REDACTION_RULES, ...compileUserRules([{ name: 'shouty', pattern: '[A-Z]{4,}' }])];
    const text = `password=${M('github-token')} ${M('private-key')} LOUD`;
    expect(redactText(text, rules)).toBe(`password=${M('github-token')} ${M('private-key')} ${M('shouty')}`);
  });
});

describe('user rules', () => {
  it('compile and apply after the built-ins, whole match or a chosen group', () => {
    const rules = compileUserRules([
      { name: 'corp-key', pattern: 'CORP-[0-9]{8}', description: 'Corp API keys' },
      { name: 'ticket-pin', pattern: 'pin (\\d{4,6})\\b', flags: 'i', secret_group: 1 },
    ]);
    expect(redactionRuleInfo(rules)).toEqual([
      { name: 'corp-key', description: 'Corp API keys', source: 'config' },
      { name: 'ticket-pin', description: 'matches /pin (\\d{4,6})\\b/i', source: 'config' },
    ]);
    const all = [...BUILTIN_REDACTION_RULES, ...rules];
    expect(redactText('use CORP-12345678 then PIN 0042 ok', all)).toBe(`use ${M('corp-key')} then PIN ${M('ticket-pin')} ok`);
    expect(redactText('CORP-1234 pin 12', all)).toBe('CORP-1234 pin 12');
  });

  it('treats an absent list as no rules', () => {
    expect(compileUserRules(undefined)).toEqual([]);
    expect(compileUserRules([])).toEqual([]);
  });

  it.each([
    ['not a list', { name: 'x', pattern: 'y' }, /"redaction_rules" must be a list/],
    ['a missing pattern', [{ name: 'corp-key' }], /redaction rule #1 "corp-key": "pattern"/],
    ['a bad name', [{ name: 'Corp Key', pattern: 'x' }], /redaction rule #1 "Corp Key": "name" must be lower-case/],
    ['an unknown field', [{ name: 'a', pattern: 'x', group: 1 }], /redaction rule #1 "a": .*group/],
    ['a bad regex', [{ name: 'ok', pattern: 'a' }, { name: 'broken', pattern: '(unclosed' }], /redaction rule #2 "broken": "pattern" is not a valid JavaScript regular expression/],
    ['an empty-matching pattern', [{ name: 'loose', pattern: 'x*' }], /redaction rule #1 "loose": "pattern" matches the empty string/],
    ['an alternative matching empty', [{ name: 'loose', pattern: 'abc|' }], /matches the empty string/],
    ['a built-in name', [{ name: 'github-token', pattern: 'x' }], /"github-token": the name is already used by a built-in rule/],
    ['a duplicate name', [{ name: 'a', pattern: 'x' }, { name: 'a', pattern: 'y' }], /redaction rule #2 "a": the name is already used by an earlier rule/],
    ['a missing group', [{ name: 'g', pattern: 'a(b)', secret_group: 2 }], /"g": "secret_group" is 2 but the pattern has 1 capture group$/],
    ['the sticky flag', [{ name: 'f', pattern: 'x', flags: 'y' }], /"f": "flags" may hold only i, m, s, u, v/],
  ])('reject %s with a message naming the rule', (_what, config, message) => {
    expect(() => compileUserRules(config)).toThrow(message);
  });
});

describe('redactValue', () => {
  it('redacts every string in nested arrays and objects and keeps the other values', () => {
    const plan = [{ cmd: `git push https://${GITHUB}@github.com/o/r`, retries: 3, dry: false, note: null }, ['password=x', 7]];
    expect(redactValue(plan, BUILTIN_REDACTION_RULES)).toEqual([
      { cmd: `git push https://${M('github-token')}@github.com/o/r`, retries: 3, dry: false, note: null },
      [`password=${M('password-assignment')}`, 7],
    ]);
    expect(plan[0]).toEqual(expect.objectContaining({ cmd: expect.stringContaining(GITHUB) })); // input untouched
  });

  it('replaces the whole value under a key that names a secret', () => {
    const env = { PGPASSWORD: 'correct horse', api_key: 12345, Authorization: 'Basic dXNlcjpwYXNz', aws_secret_access_key: 'short', PWD: '/home/me', token: '', secret: '${SECRET}', tokens: 5 };
    expect(redactValue(env, BUILTIN_REDACTION_RULES)).toEqual({
      PGPASSWORD: M('password-assignment'),
      api_key: M('password-assignment'),
      Authorization: M('bearer-token'),
      aws_secret_access_key: M('aws-secret-key'),
      PWD: '/home/me',
      token: '',
      secret: '${SECRET}',
      tokens: 5,
    });
  });

  it('redacts object keys and keeps colliding keys apart', () => {
    const byToken = { [GITHUB]: 'ci', [GITHUB.replace('ghp_', 'gho_')]: 'oauth' };
    expect(redactValue(byToken, BUILTIN_REDACTION_RULES)).toEqual({ [M('github-token')]: 'ci', [`${M('github-token')} #2`]: 'oauth' });
  });

  it('keeps a "__proto__" key from JSON as a plain member', () => {
    const redacted = redactValue(JSON.parse('{"__proto__": {"password": "x"}}'), BUILTIN_REDACTION_RULES);
    expect(Object.getPrototypeOf(redacted)).toBe(Object.prototype);
    expect(JSON.stringify(redacted)).toBe(`{"__proto__":{"password":"${M('password-assignment')}"}}`);
  });

  it('is idempotent on structured values', () => {
    const value = { a: [`token=${SLACK}`, { password: 42, [GITHUB]: 1, [GITHUB.replace('ghp_', 'ghs_')]: 2 }] };
    const once = redactValue(value, BUILTIN_REDACTION_RULES);
    expect(redactValue(once, BUILTIN_REDACTION_RULES)).toEqual(once);
  });
});

describe('large and adversarial input', () => {
  const MiB = 1024 * 1024;
  const fill = (unit: string) => unit.repeat(Math.ceil(MiB / unit.length)).slice(0, MiB);
  // Each would make a backtracking pattern quadratic or worse; all must finish (test timeout) and still redact the tail.
  const adversarial: Record<string, string> = {
    'unterminated BEGIN lines': fill('-----BEGIN RSA PRIVATE KEY-----'),
    'BEGIN with key lines, never an END': fill('-----BEGIN PRIVATE KEY-----\nAAAA\nProc-Type: x\n'),
    dashes: fill('-'),
    'AKIA repeated': fill('AKIA'),
    'one endless token run': `ghp_${fill('a')}_`,
    'token prefixes': fill('ghp_github_pat_glpat-xoxb-'),
    'aws keys without values': fill('aws_secret_access_key: "'),
    'long aws value': `aws_secret_access_key=${fill('A')}`,
    'bearer headers without tokens': fill('Authorization: Bearer '),
    'assignments without values': fill('password: '),
    'open quotes': fill('"password": "'),
    'escapes in a quoted value': `password="${fill('\\')}`,
    'dashed keyword runs': `a-${fill('password-')}`,
    'flag without value': fill('--password '),
    'a mask that is not': `password=${fill('*')}x`,
    'an unclosed placeholder': `password=<${fill('a')}`,
    'keywords in prose': fill('token secret password api_key '),
  };

  it.each(Object.entries(adversarial))('%s (1 MiB) finishes and the secret after it is redacted', (_name, text) => {
    const out = redact(`${text}\npassword=hunter2`);
    expect(out.endsWith(`\npassword=${M('password-assignment')}`)).toBe(true);
    expect(out).not.toContain('hunter2');
  });

  it('redacts secrets spread through 4 MiB of ordinary output', () => {
    const line = 'INFO 2025-01-01T00:00:00Z fetched 200 OK in 12 ms from https://example.com/api/v1/items?page=3\n';
    const chunks: string[] = [];
    for (let i = 0; i < 1000; i++) chunks.push(line.repeat(40), i % 2 ? `token=${GITHUB}\n` : `key ${AWS_ID}\n`);
    const out = redact(chunks.join(''));
    expect(out).not.toContain(GITHUB);
    expect(out).not.toContain(AWS_ID);
    expect(out.split(M('github-token')).length - 1).toBe(500);
    expect(out.split(M('aws-access-key-id')).length - 1).toBe(500);
  });
});
