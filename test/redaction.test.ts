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
const BASIC = Buffer.from(`deploy:${'S3cr3tPass'}`).toString('base64');
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
  'basic-auth': {
    redacts: [
      [`Authorization: Basic ${BASIC}`, `Authorization: Basic ${M('basic-auth')}`],
      [`curl -H 'authorization: basic ${BASIC}' https://api`, `curl -H 'authorization: basic ${M('basic-auth')}' https://api`],
      [`{"Authorization": "Basic ${BASIC}"}`, `{"Authorization": "Basic ${M('basic-auth')}"}`],
      [`Proxy-Authorization: Basic ${BASIC}`, `Proxy-Authorization: Basic ${M('basic-auth')}`],
    ],
    keeps: ['Authorization: Basic', 'Authorization: Basic $CREDENTIALS', 'WWW-Authenticate: Basic realm="api"', 'basic authorization is turned off'],
  },
  'url-credentials': {
    redacts: [
      ['git clone https://deploy:S3cr3tPass@host/repo.git', `git clone https://deploy:${M('url-credentials')}@host/repo.git`],
      ['psql postgres://admin:Sup3rS3cret@db/prod', `psql postgres://admin:${M('url-credentials')}@db/prod`],
      ['REDIS_URL=redis://:hunter2@cache:6379/0', `REDIS_URL=redis://:${M('url-credentials')}@cache:6379/0`],
      ['"mongodb+srv://app:p@ss:w0rd@cluster0.example.net/db"', `"mongodb+srv://app:${M('url-credentials')}@cluster0.example.net/db"`],
      ['export https_proxy=http://me:Pa55,word@proxy:3128 next', `export https_proxy=http://me:${M('url-credentials')}@proxy:3128 next`],
    ],
    keeps: [
      'https://host:8443/path?user=a@b',
      'ssh://git@host:22/repo.git and git@github.com:org/repo.git',
      'http://[::1]:8080/health',
      'https://user@host/x',
      'https://deploy:$DEPLOY_TOKEN@host/repo.git https://u:${PASS}@h https://u:****@h',
      'write to me at mailto:me@example.com',
    ],
  },
  'curl-user': {
    redacts: [
      ['curl -u user:pass https://api', `curl -u user:${M('curl-user')} https://api`],
      ['curl -sS --user deploy:S3cr3t -X POST https://api', `curl -sS --user deploy:${M('curl-user')} -X POST https://api`],
      ['curl -uadmin:hunter2 https://api', `curl -uadmin:${M('curl-user')} https://api`],
      [`curl -H 'Accept: */*' -u 'ci:pa ss' https://api`, `curl -H 'Accept: */*' -u 'ci:${M('curl-user')}' https://api`],
      ['curl --user="svc:Pa55,word" https://api', `curl --user="svc:${M('curl-user')}" https://api`],
    ],
    keeps: [
      'curl -u user https://api',
      'curl -u "$USER:$PASS" https://api',
      'curl --user-agent x:y https://api',
      'docker run -u 1000:1000 alpine',
      'sudo -u www-data:www-data ls',
      'curl https://api | grep -u x:y',
    ],
  },
  'mysql-password': {
    redacts: [
      ['mysql -u root -pSecret db', `mysql -u root -p${M('mysql-password')} db`],
      ['mysqldump -uroot -pHunter2 --all-databases > all.sql', `mysqldump -uroot -p${M('mysql-password')} --all-databases > all.sql`],
      [`mariadb -h db -p'pa ss' -e 'select 1'`, `mariadb -h db -p'${M('mysql-password')}' -e 'select 1'`],
      ['/usr/bin/mysqladmin -pS3cr3t status', `/usr/bin/mysqladmin -p${M('mysql-password')} status`],
    ],
    keeps: [
      'mysql -u root -p mydb',
      'mysql -u root -p$MYSQL_ROOT_PASSWORD db',
      'mkdir -p /var/lib/mysql',
      'ssh -p2222 host mysql',
      'rsync -pavz mysql/ backup/',
      'docker run -p3306:3306 mysql:8',
      'mysql -P3306 -h db',
    ],
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
      // The value runs to the end of the token, commas inside it included.
      ['DB_PASSWORD=Pa55,word99 next', `DB_PASSWORD=${M('password-assignment')} next`],
      ['password=hunter2, user=bob', `password=${M('password-assignment')}, user=bob`],
      ['mysql --password=Pa55,w0rd db', `mysql --password=${M('password-assignment')} db`],
      // Name/value pairs (Kubernetes, ECS), as JSON and as YAML.
      ['{"name": "PGPASSWORD", "value": "Sup3r"}', `{"name": "PGPASSWORD", "value": "${M('password-assignment')}"}`],
      ['[{"Name":"DB_API_KEY","Value":"k-9"}]', `[{"Name":"DB_API_KEY","Value":"${M('password-assignment')}"}]`],
      ['- name: PGPASSWORD\n  value: Sup3r\n- name: PGHOST', `- name: PGPASSWORD\n  value: ${M('password-assignment')}\n- name: PGHOST`],
      ['"name": "GITHUB_TOKEN",\n        "value": "abc"', `"name": "GITHUB_TOKEN",\n        "value": "${M('password-assignment')}"`],
      // A written-out argv list.
      ['["mysql", "--password", "hunter2", "db"]', `["mysql", "--password", "${M('password-assignment')}", "db"]`],
      ["['deploy', '--api-key', 'k-123']", `['deploy', '--api-key', '${M('password-assignment')}']`],
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
      'DB_PASSWORD=, DB_USER=bob',
      '{"name": "PGHOST", "value": "db"}',
      '{"name": "password-reset", "value": "on"}',
      '- name: PGPASSWORD\n  valueFrom:\n    secretKeyRef: {name: pg, key: password}',
      '["mysql", "--password", "--verbose"]',
      '["ls", "--password-file", "/etc/pw"]',
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

  it('finds the keywords of case-insensitive rules in any case (the joined prefilter scan has no i flag)', () => {
    const insensitive = BUILTIN_REDACTION_RULES.filter((rule) => rule.pattern.flags.includes('i'));
    expect(insensitive.map((rule) => rule.name)).toEqual(['aws-secret-key', 'bearer-token', 'basic-auth', 'password-assignment']);
    for (const rule of insensitive) {
      for (const [input] of CASES[rule.name].redacts) {
        for (const variant of [input.toUpperCase(), input.toLowerCase()]) expect(redact(variant), variant).toContain(M(rule.name));
      }
    }
  });

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
      `$ curl -u ci:curlpass -H 'Authorization: Basic ${BASIC}' https://ci:urlpass@host/x`,
      '$ mysql -uroot -pmysqlpass',
    ].join('\n');
    const out = redact(text);
    for (const secret of [AWS_ID, AWS_SECRET, GITHUB, 'p4ss', PEM_BODY.slice(0, 20), GITLAB, SLACK, 'curlpass', BASIC, 'urlpass', 'mysqlpass']) expect(out).not.toContain(secret);
    for (const rule of BUILTIN_REDACTION_RULES.map((r) => r.name).filter((n) => n !== 'bearer-token')) expect(out).toContain(M(rule));
    expect(out).toContain('$ curl -H \'Authorization: Bearer [REDACTED:github-token]\'');
  });
});

describe('expected misses (listed in the README)', () => {
  it.each([
    ['a secret split over two lines', 'Enter password:\nhunter2'],
    ['names that only resemble secret names', 'PASS=hunter2 DB_PW=x --pass y pw: z'],
    ['a base64-encoded assignment', `echo ${Buffer.from('password=hunter2').toString('base64')} | base64 -d`],
    ['a URL-encoded assignment', 'curl -d password%3Dhunter2 https://api'],
    ['a value before its name', '"value": "hunter2", "name": "PGPASSWORD"'],
    ['a URL password holding a raw slash', 'https://u:ab/cd@host/x'],
    ['single-dash flags', 'keytool -storepass hunter2; openssl rsa -passin pass:hunter2'],
  ])('%s: %j is stored as given', (_what, text) => {
    expect(redact(text)).toBe(text);
  });

  it('argv elements -pSecret and user:pass, whose text forms are redacted', () => {
    const argv = [['mysql', '-uroot', '-pSecret'], ['curl', '-u', 'ci:hunter2', 'https://api']];
    expect(redactValue(argv, BUILTIN_REDACTION_RULES)).toEqual(argv);
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

  it('replaces every string and number of an array under a key that names a secret, and keeps look-alikes', () => {
    const config = { DB_PASSWORD: ['first', 'second', 7, ['nested'], '$DB_PASSWORD', { note: 'kept' }], DB_PASSWORD_FILE: ['/run/secrets/db'], passwords_rotated: [1, 2] };
    expect(redactValue(config, BUILTIN_REDACTION_RULES)).toEqual({
      DB_PASSWORD: [M('password-assignment'), M('password-assignment'), M('password-assignment'), [M('password-assignment')], '$DB_PASSWORD', { note: 'kept' }],
      DB_PASSWORD_FILE: ['/run/secrets/db'],
      passwords_rotated: [1, 2],
    });
  });

  it('replaces the value of a {name, value} pair whose name names a secret, whatever the case of the keys', () => {
    const env = [
      { name: 'PGPASSWORD', value: 'Sup3rS3cret' },
      { Name: 'AWS_SECRET_ACCESS_KEY', Value: 'short' },
      { key: 'Authorization', value: 'Basic abc' },
      { name: 'API_TOKEN', value: ['a', 'b'] },
    ];
    expect(redactValue(env, BUILTIN_REDACTION_RULES)).toEqual([
      { name: 'PGPASSWORD', value: M('password-assignment') },
      { Name: 'AWS_SECRET_ACCESS_KEY', Value: M('aws-secret-key') },
      { key: 'Authorization', value: M('bearer-token') },
      { name: 'API_TOKEN', value: [M('password-assignment'), M('password-assignment')] },
    ]);
  });

  it('keeps the value of a pair whose name is not a secret, a placeholder, and a pair with no value field', () => {
    const env = [
      { name: 'PGHOST', value: 'db.internal' },
      { name: 'password-reset', value: 'enabled' },
      { name: 'PGPASSWORD', value: '${PGPASSWORD}' },
      { name: 'PGPASSWORD', valueFrom: { secretKeyRef: { name: 'pg', key: 'password' } } },
      { label: 'PGPASSWORD', value: 'not a pair' },
    ];
    expect(redactValue(env, BUILTIN_REDACTION_RULES)).toEqual(env);
  });

  it('replaces the element after a secret flag in an argv array, and keeps flags and look-alikes', () => {
    expect(redactValue(['mysql', '--password', 'hunter2', 'db'], BUILTIN_REDACTION_RULES)).toEqual(['mysql', '--password', M('password-assignment'), 'db']);
    expect(redactValue(['deploy', '--db-password', 'p', '--API-KEY', 12345, '--token', '$TOKEN'], BUILTIN_REDACTION_RULES)).toEqual(
      ['deploy', '--db-password', M('password-assignment'), '--API-KEY', M('password-assignment'), '--token', '$TOKEN'],
    );
    const lookAlikes = ['login', '--password', '--verbose', '--password-file', '/etc/pw', 'password', 'plain', '-p', 'x', '--token'];
    expect(redactValue(lookAlikes, BUILTIN_REDACTION_RULES)).toEqual(lookAlikes);
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
    'one endless URL authority': `https://user:${fill('a:')}`,
    'URL schemes without user info': fill('https://host:1/'),
    'curl without -u': fill('curl '),
    'curl -u without a password': fill('curl -u user '),
    'mysql without -p': fill('mysql -u '),
    'a bare -p after mysql': `mysql ${fill('-p ')}`,
    'Basic headers without credentials': fill('Authorization: Basic '),
    'commas in a value': `password=${fill('a,')}`,
    'names without values': fill('"name": "PGPASSWORD", '),
    'spaces after a secret name': `name: PGPASSWORD${fill(' ')}`,
    'argv flags without values': fill('"--password", '),
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
