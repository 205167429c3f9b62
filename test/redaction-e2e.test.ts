import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256Hex } from '../node/sha256.js';
import { CLOUD_SYNC_PATH } from '../protocol/cloud-methods.js';
import { isJournalSegmentName } from '../protocol/data-file.js';
import { parseJournal } from '../node/journal-files.js';
import { EVENT_NOTIFICATION, type EventParams } from '../protocol/methods.js';
import { recordHash, type StepLoggedRecord } from '../protocol/records.js';
import { BUILTIN_REDACTION_RULES } from '../protocol/redaction.js';
import { CLI_BIN, CLOUD_BIN, openRawSocket, startDaemon, type Daemon, type RawSocket } from './daemon-harness.js';
import { spawnTracked, tempDir, waitFor } from './processes.js';

// Assembled at run time so that secret scanners do not flag this file.
const PEM_LINES = ['MIIEpAIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo', '4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7on', 'LvOCcRaGrPPQbKx0SDmOhmSeJ3A1VmuqFQ=='];
const SECRETS = {
  'aws-access-key-id': `AKIA${'Q7EXAMPLE2SECRET'.slice(0, 16)}`,
  'aws-secret-key': `Zt4eK9/mQ2+vR8xW1pL6${'nB3cY7hJ0sF5gD2aE9uT'}`,
  'github-token': `ghp_${'Rk8s2Lq9Xv4Zt1Wm'.repeat(2)}Yp3N`,
  'gitlab-token': `glpat-${'Hq7Vn2Kx9Ls4'.repeat(2)}`,
  'slack-token': `xoxp-${'4815162342'}-${'Ab9Cd8Ef7Gh6Ij5Kl4'}`,
  'bearer-token': `eyJhbGciOiJIUzI1NiJ9.${'eyJzdWIiOiJhZ2VudCJ9'}.k3Yq-x_Zs`,
  'private-key': PEM_LINES.join('\n'),
  'basic-auth': Buffer.from(`ci:${'b4sic-7e21'}`).toString('base64'),
  'url-credentials': `Url-${'5d0a93-unique'}`,
  'curl-user': `Curl-${'c81f4e-unique'}`,
  'mysql-password': `My-${'2b7e55-unique'}`,
  'password-assignment': `Pw-${'9f3c21e7-unique'}`,
  'corp-key': `CORP-${'73105528'}`,
} as const;
/** Secrets the plan's structure names (no `password=` in their text): each is redacted whole. */
const PLAN_SECRETS = {
  underKey: `plan-${'only-8d2e-secret'}`,
  inArrayUnderKey: `plan-${'array-41c7-secret'}`,
  nameValuePair: `plan-${'pair-93ab-secret'}`,
  argvElement: `plan-${'argv-6e0f-secret'}`,
};
const PLAN_ENV = {
  env: { PGPASSWORD: PLAN_SECRETS.underKey, DB_PASSWORD: [PLAN_SECRETS.inArrayUnderKey] },
  containers: [{ env: [{ name: 'MYSQL_ROOT_PASSWORD', value: PLAN_SECRETS.nameValuePair }, { name: 'MYSQL_DATABASE', value: 'app' }] }],
  args: ['mysql', '--password', PLAN_SECRETS.argvElement, 'app'],
};

/** The strings that must never be stored: each secret, and each line of the key on its own (JSON escapes newlines). */
const FORBIDDEN = [...Object.values(SECRETS), ...PEM_LINES, ...Object.values(PLAN_SECRETS)];

const marker = (rule: string) => `[REDACTED:${rule}]`;
const USER_RULE = { name: 'corp-key', pattern: 'CORP-[0-9]{8}', description: 'Corp API keys' };
const CLOUD_TOKEN = 'cloud-token-for-redaction-e2e';

const COMMAND_WITH_SECRETS = [
  `git push https://${SECRETS['github-token']}@github.com/o/r`,
  `mysql --password ${SECRETS['password-assignment']}`,
  `mysqldump -uroot -p${SECRETS['mysql-password']} app`,
  `curl -u ci:${SECRETS['curl-user']} -H "Authorization: Basic ${SECRETS['basic-auth']}" https://ci:${SECRETS['url-credentials']}@ci.example.com/x`,
].join(' && ');

/** One task that carries one secret per rule, spread over every field the daemon redacts. */
async function logTaskWithSecrets(rpc: RawSocket): Promise<{ taskId: string; lastSeq: number }> {
  const { task_id: taskId } = await rpc.call('create_task', {
    description: `rotate keys; old id ${SECRETS['aws-access-key-id']}`,
    mode: 'autonomous',
    steps: [
      `clone with ${SECRETS['gitlab-token']}`,
      { run: `curl -H "Authorization: Bearer ${SECRETS['bearer-token']}" https://api.example.com` },
      PLAN_ENV,
    ],
  });
  await rpc.call('log_step', {
    task_id: taskId,
    step_num: 1,
    command: COMMAND_WITH_SECRETS,
    status: 'failed',
    output: `-----BEGIN RSA PRIVATE KEY-----\n${SECRETS['private-key']}\n-----END RSA PRIVATE KEY-----\naws_secret_access_key = ${SECRETS['aws-secret-key']}`,
    error: `slack: invalid_auth for ${SECRETS['slack-token']}`,
    recovery: `rotated ${SECRETS['corp-key']}`,
    exit_code: 1,
  });
  const { seq } = await rpc.call('complete_task', { task_id: taskId, final_status: 'completed' });
  return { taskId, lastSeq: seq };
}

function writeConfig(dir: string, config: unknown): string {
  const file = join(dir, 'taskhistoryd.json');
  writeFileSync(file, JSON.stringify(config));
  return file;
}

/** Every file under a directory, recursively, as text. */
function filesUnder(dir: string): Map<string, string> {
  const files = new Map<string, string>();
  for (const name of readdirSync(dir, { recursive: true }) as string[]) {
    const path = join(dir, name);
    if (statSync(path).isFile()) files.set(path, readFileSync(path, 'utf8'));
  }
  return files;
}

function expectNoSecrets(where: string, text: string): void {
  for (const secret of FORBIDDEN) expect(text.includes(secret), `${where} holds the secret ${secret}`).toBe(false);
}

function expectEveryMarker(where: string, text: string): void {
  for (const rule of Object.keys(SECRETS)) expect(text, `${where} lacks the marker of ${rule}`).toContain(marker(rule));
}

async function startCloudEndpoint(): Promise<{ url: string; dataDir: string }> {
  const dir = tempDir('taskhistory-cloud-');
  const tokensFile = join(dir, 'tokens.json');
  writeFileSync(tokensFile, JSON.stringify({ tokens: [{ token: CLOUD_TOKEN, machine_id: 'test-machine' }] }), { mode: 0o600 });
  const dataDir = join(dir, 'data');
  const cloud = spawnTracked(process.execPath, [CLOUD_BIN, '--port', '0', '--host', '127.0.0.1', '--data-dir', dataDir, '--tokens-file', tokensFile]);
  const listening = await waitFor(() => /<6>listening url=(\S+)/.exec(cloud.stderr())?.[1], 15_000, `cloud endpoint to listen (stderr: ${cloud.stderr()})`);
  return { url: `ws://${new URL(listening).host}${CLOUD_SYNC_PATH}`, dataDir };
}

describe('redaction through the daemon, the journal, the data file and the cloud', () => {
  let daemon: Daemon;
  let rpc: RawSocket;
  let cloudDataDir: string;
  let taskId: string;
  let lastSeq: number;
  let events: { method: string; params: EventParams }[];
  let journalText: string;
  let journalRecordCount: number;

  beforeAll(async () => {
    const dir = tempDir();
    const cloud = await startCloudEndpoint();
    cloudDataDir = cloud.dataDir;
    const tokenFile = join(dir, 'cloud-token');
    writeFileSync(tokenFile, `${CLOUD_TOKEN}\n`, { mode: 0o600 });
    daemon = await startDaemon({
      args: [
        '--config', writeConfig(dir, { redaction_rules: [USER_RULE] }),
        '--cloud-url', cloud.url,
        '--cloud-token-file', tokenFile,
        // No idle checkpoint: the journal segments keep every record until shutdown, so they can be read.
        '--checkpoint-idle-ms', '3600000',
      ],
    });
    rpc = await openRawSocket(daemon.socketPath);
    await rpc.call('subscribe', {});
    ({ taskId, lastSeq } = await logTaskWithSecrets(rpc));
    events = [];
    for (let i = 0; i < lastSeq; i++) events.push(await rpc.next());
    const segments = readdirSync(daemon.dataDir).filter(isJournalSegmentName);
    const segmentTexts = segments.map((name) => readFileSync(join(daemon.dataDir, name), 'utf8'));
    journalText = segmentTexts.join('');
    journalRecordCount = segmentTexts.reduce((count, text) => count + parseJournal(text).records.length, 0);
    await waitFor(async () => (await rpc.call('status')).cloud.acked_seq === lastSeq, 30_000, `the cloud to acknowledge seq ${lastSeq}`);
  });

  afterAll(async () => {
    rpc?.close();
    await daemon?.stop();
  });

  it('plants a secret for every rule, built-in and config', () => {
    expect(Object.keys(SECRETS).sort()).toEqual([...BUILTIN_REDACTION_RULES.map((rule) => rule.name), USER_RULE.name].sort());
  });

  it('answers get_task with markers in place of every secret and keeps the text around them', async () => {
    const task = await rpc.call('get_task', { task_id: taskId });
    const text = JSON.stringify(task);
    expectNoSecrets('get_task', text);
    expectEveryMarker('get_task', text);
    expect(task.description).toBe(`rotate keys; old id ${marker('aws-access-key-id')}`);
    expect(task.plan).toEqual([
      `clone with ${marker('gitlab-token')}`,
      { run: `curl -H "Authorization: Bearer ${marker('bearer-token')}" https://api.example.com` },
      {
        env: { PGPASSWORD: marker('password-assignment'), DB_PASSWORD: [marker('password-assignment')] },
        containers: [{ env: [{ name: 'MYSQL_ROOT_PASSWORD', value: marker('password-assignment') }, { name: 'MYSQL_DATABASE', value: 'app' }] }],
        args: ['mysql', '--password', marker('password-assignment'), 'app'],
      },
    ]);
    expect(task.steps[0]).toMatchObject({
      command: [
        `git push https://${marker('github-token')}@github.com/o/r`,
        `mysql --password ${marker('password-assignment')}`,
        `mysqldump -uroot -p${marker('mysql-password')} app`,
        `curl -u ci:${marker('curl-user')} -H "Authorization: Basic ${marker('basic-auth')}" https://ci:${marker('url-credentials')}@ci.example.com/x`,
      ].join(' && '),
      output: `${marker('private-key')}\naws_secret_access_key = ${marker('aws-secret-key')}`,
      error: `slack: invalid_auth for ${marker('slack-token')}`,
      recovery: `rotated ${marker('corp-key')}`,
      exit_code: 1,
    });
  });

  it('sends subscribers only redacted records', () => {
    expect(events.map((event) => event.method)).toEqual(Array(lastSeq).fill(EVENT_NOTIFICATION));
    expectNoSecrets('event notifications', JSON.stringify(events));
    expectEveryMarker('event notifications', JSON.stringify(events));
  });

  it('writes only redacted text to the journal', () => {
    expect(journalRecordCount).toBe(lastSeq);
    expectNoSecrets('journal segments', journalText);
    expectEveryMarker('journal segments', journalText);
  });

  it('pushes only redacted text to the cloud', () => {
    const files = filesUnder(cloudDataDir);
    const all = [...files.values()].join('\n');
    expect(files.size).toBeGreaterThan(0);
    for (const [path, text] of files) expectNoSecrets(`cloud file ${path}`, text);
    expectEveryMarker('cloud data dir', all);
  });

  it('hashes the redacted text: digests are of the stored text and the chain verifies', async () => {
    const step = events.map((event) => event.params.record).find((record): record is StepLoggedRecord => record.type === 'step_logged')!;
    expect(step.output).toContain(marker('private-key'));
    expect(step.output_sha256).toBe(sha256Hex(step.output!));
    expect(step.error_sha256).toBe(sha256Hex(step.error!));
    expect(step.hash).toBe(recordHash(step, sha256Hex));
    expect(await rpc.call('verify')).toMatchObject({ ok: true, first_bad_seq: null });
  });

  it('lists the built-in and the config rules over RPC and in `taskhistory redaction-rules`', async () => {
    const names = [...BUILTIN_REDACTION_RULES.map((rule) => rule.name), USER_RULE.name];
    const listed = await rpc.call('redaction_rules');
    expect(listed.enabled).toBe(true);
    expect(listed.rules.map((rule: { name: string }) => rule.name)).toEqual(names);
    expect(listed.rules.at(-1)).toEqual({ name: 'corp-key', description: 'Corp API keys', source: 'config' });

    const cli = spawnSync(process.execPath, [CLI_BIN, '--socket', daemon.socketPath, 'redaction-rules'], { encoding: 'utf8' });
    expect(cli.status, cli.stderr).toBe(0);
    const lines = cli.stdout.trim().split('\n');
    expect(lines[0]).toBe('redaction on');
    for (const name of names) expect(lines.some((line) => line.startsWith(`${name} `)), `no line for ${name}`).toBe(true);
    expect(lines.find((line) => line.startsWith('corp-key '))).toMatch(/\bconfig\b.*Corp API keys/);

    const json = spawnSync(process.execPath, [CLI_BIN, '--socket', daemon.socketPath, '--json', 'redaction-rules'], { encoding: 'utf8' });
    expect(json.status, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual(listed);
  });

  it('writes only redacted text to task_history.json at shutdown', async () => {
    rpc.close();
    expect(await daemon.stop()).toEqual({ code: 0, signal: null });
    const text = readFileSync(daemon.dataFile, 'utf8');
    expectNoSecrets('task_history.json', text);
    expectEveryMarker('task_history.json', text);
    const remaining = readdirSync(daemon.dataDir).filter(isJournalSegmentName);
    for (const name of remaining) expectNoSecrets(name, readFileSync(join(daemon.dataDir, name), 'utf8'));
  });
});

describe('redaction switched off or misconfigured', () => {
  it('stores the text as given with --no-redact', async () => {
    const daemon = await startDaemon({ args: ['--no-redact'] });
    const rpc = await openRawSocket(daemon.socketPath);
    const { taskId } = await logTaskWithSecrets(rpc);
    expect((await rpc.call('status')).redaction).toBe(false);
    expect((await rpc.call('redaction_rules')).enabled).toBe(false);
    const step = (await rpc.call('get_task', { task_id: taskId })).steps[0];
    expect(step.command).toContain(SECRETS['github-token']);
    expect(step.recovery).toBe(`rotated ${SECRETS['corp-key']}`);
    rpc.close();
    await daemon.stop();
    const stored = JSON.parse(readFileSync(daemon.dataFile, 'utf8')).tasks[0];
    expect(stored.description).toBe(`rotate keys; old id ${SECRETS['aws-access-key-id']}`);
    expect(stored.plan[2]).toEqual(PLAN_ENV);
    expect(stored.steps[0].command).toBe(COMMAND_WITH_SECRETS);
    expect(stored.steps[0].output).toContain(SECRETS['private-key']);
    expect(stored.steps[0].error).toBe(`slack: invalid_auth for ${SECRETS['slack-token']}`);
  });

  it('also turns off with "redact": false in the config file', async () => {
    const daemon = await startDaemon({ args: ['--config', writeConfig(tempDir(), { redact: false })] });
    const rpc = await openRawSocket(daemon.socketPath);
    const { task_id: taskId } = await rpc.call('create_task', { description: `id ${SECRETS['aws-access-key-id']}`, mode: 'autonomous', steps: [] });
    expect((await rpc.call('get_task', { task_id: taskId })).description).toBe(`id ${SECRETS['aws-access-key-id']}`);
    rpc.close();
    await daemon.stop();
  });

  it('refuses to start on a bad user rule, naming the config file and the rule', async () => {
    const config = writeConfig(tempDir(), { redaction_rules: [{ name: 'loose', pattern: 'x*' }] });
    const daemon = await startDaemon({ args: ['--config', config], noWait: true });
    const { code } = await daemon.exited;
    expect(code).not.toBe(0);
    expect(daemon.stderr()).toContain(config);
    expect(daemon.stderr()).toContain('redaction rule #1 "loose": "pattern" matches the empty string');
  });
});
