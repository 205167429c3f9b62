import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium, openPage, type TestBrowser } from './browser-harness.js';
import { postgresBackend } from './cloud-backends.js';
import { startCloud, type Cloud } from './cloud-harness.js';
import { CLOUD_BIN, type RawSocket } from './daemon-harness.js';
import { startPushingDaemon, waitForPushed } from './console-site.js';
import { postgresBinDir } from './postgres-harness.js';
import { spawnTracked } from './processes.js';

/**
 * The console on the PostgreSQL backend: two endpoint processes on one database, a daemon pushing
 * through one, the browser reading through the other (LISTEN/NOTIFY carries the live events), a
 * viewer token from `taskhistory-cloud token create`, revoked with `token revoke`.
 */
const backend = postgresBackend();
const MACHINE = 'gamma-box';

let databaseUrl: string;
let reader: Cloud;
let pushed: Cloud;
let daemon: RawSocket;
let chromium: TestBrowser;
const viewer = { id: '', token: '' };

/** Runs `taskhistory-cloud <args> --database-url URL` to its end. */
async function cloudCommand(args: string[]): Promise<{ stdout: string; stderr: string }> {
  const child = spawnTracked(process.execPath, [CLOUD_BIN, ...args, '--database-url', databaseUrl]);
  const { code } = await child.exited;
  if (code !== 0) throw new Error(`taskhistory-cloud ${args.join(' ')} exited ${code}:\n${child.stderr()}`);
  return { stdout: child.stdout(), stderr: child.stderr() };
}

async function createToken(scope: string[]): Promise<{ id: string; token: string }> {
  const { stdout, stderr } = await cloudCommand(['token', 'create', ...scope]);
  return { token: stdout.trim(), id: /created token (\S+)/.exec(stderr)![1] };
}

describe.skipIf(postgresBinDir() === null)('the fleet console on PostgreSQL, through two endpoint processes', () => {
  beforeAll(async () => {
    const site = await backend.newSite();
    databaseUrl = site.args[1];
    reader = await startCloud(site);
    pushed = await startCloud(site);
    Object.assign(viewer, await createToken(['--viewer', '--name', 'console test']));
    const machineToken = (await createToken(['--machine', MACHINE])).token;
    daemon = (await startPushingDaemon(pushed.url, MACHINE, machineToken)).socket;
    chromium = await launchChromium();
    // A cluster, two endpoints, two CLI runs, a daemon and a browser: slow when the machine is busy.
  }, 180_000);
  afterAll(async () => {
    daemon?.close();
    await chromium?.close();
  });

  it('signs in with a viewer token, shows a step pushed through the other endpoint within 2 s, and signs out when the token is revoked', async () => {
    const { task_id } = await daemon.call('create_task', { description: 'Rotate the certificates', mode: 'autonomous', steps: ['issue', 'install'], agent: 'ops' });
    await daemon.call('log_step', { task_id, step_num: 1, command: 'certbot renew', status: 'success', exit_code: 0, duration_ms: 2_400 });
    await waitForPushed(daemon);

    const { context, page, problems } = await openPage(chromium.browser);
    await page.goto(`${reader.httpBase}/`);
    await page.getByLabel('Token').fill(viewer.token);
    await page.getByLabel('Token').press('Enter');
    await page.locator(`tr[data-machine="${MACHINE}"]`).waitFor();

    await page.goto(`${reader.httpBase}/?view=task&machine=${MACHINE}&task=${task_id}`);
    await page.locator('li.step[data-step="1"]').waitFor();
    await page.locator('.live-state[data-state="live"]').waitFor();
    const logged = Date.now();
    await daemon.call('log_step', { task_id, step_num: 2, command: 'systemctl reload nginx', status: 'success', exit_code: 0, duration_ms: 150 });
    await page.locator('li.step[data-step="2"]').waitFor({ timeout: 2_000 });
    console.log(`console live latency (PostgreSQL, second endpoint): a logged step shown ${Date.now() - logged} ms after log_step was sent`);
    expect(await page.locator('li.step[data-step="2"] [data-field="exit_code"]').innerText()).toBe('0');

    await cloudCommand(['token', 'revoke', viewer.id]);
    await page.getByRole('heading', { name: 'Sign in to the fleet console' }).waitFor({ timeout: 10_000 });
    expect(await page.locator('#sign-in-message').innerText()).toMatch(/refused this token.*revoked/);
    expect(await page.evaluate(() => sessionStorage.getItem('taskhistory.token'))).toBeNull();
    // Chromium itself logs the 401 that tells the page the token is gone; the page logs nothing.
    expect(problems.consoleErrors.filter((text) => !text.includes('status of 401'))).toEqual([]);
    expect(problems.pageErrors).toEqual([]);
    expect(problems.dialogs).toEqual([]);
    await context.close();
  });
});
