import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium, openPage, type PageProblems, type TestBrowser } from './browser-harness.js';
import { fileBackend, makeChain, openCloudSocket, startCloud, writeTokensFile } from './cloud-harness.js';
import { readJournalRecords } from '../node/journal-files.js';
import { readDataFileContent } from './data-file-reading.js';
import type { ChainRecord } from '../protocol/records.js';
import { REPO, type Daemon, type RawSocket } from './daemon-harness.js';
import { sleep, waitFor } from './processes.js';
import { startConsoleSite, startPushingDaemon, waitForPushed, type ConsoleSite } from './console-site.js';

/**
 * The fleet console end to end: real daemons push to a real taskhistory-cloud (file backend), a
 * real headless Chromium signs in and reads the fleet through the page.
 */
const MACHINES = ['alpha-box', 'beta-box', 'delta-box'];
/** More tasks than one page of the console's task list (50). */
const BATCH_TASKS = 60;
/** The text of an agent's output that must show literally and run nothing. */
const PAYLOAD = '<img src=x onerror="window.__pwned=1;alert(1)"></script><script>window.__pwned=2;alert(2)</script>';
const SCREENSHOTS = join(REPO, 'docs', 'screenshots');

let site: ConsoleSite;
let chromium: TestBrowser;
const sockets: Record<string, RawSocket> = {};
const daemons: Record<string, Daemon> = {};
const tasks: Record<string, string> = {};

async function createTask(machine: string, description: string, agent: string, plan: string[]): Promise<string> {
  const { task_id } = await sockets[machine].call('create_task', { description, mode: 'autonomous', steps: plan, agent });
  return task_id;
}

async function logStep(machine: string, taskId: string, step: number, fields: Record<string, unknown>): Promise<void> {
  await sockets[machine].call('log_step', { task_id: taskId, step_num: step, status: 'success', ...fields });
}

beforeAll(async () => {
  site = await startConsoleSite(await fileBackend.newSite(), MACHINES);
  for (const machine of MACHINES) ({ daemon: daemons[machine], socket: sockets[machine] } = await startPushingDaemon(site.cloud.url, machine, site.tokens.machine[machine]));
  const start = Date.now() / 1000 - 120;

  tasks.build = await createTask('alpha-box', 'Build and test the release', 'builder', ['install', 'compile', 'test']);
  await logStep('alpha-box', tasks.build, 1, { command: 'npm ci', exit_code: 0, started_at: start, duration_ms: 4_200, output: 'added 212 packages' });
  await logStep('alpha-box', tasks.build, 2, { command: 'npm run build', exit_code: 0, started_at: start + 5, duration_ms: 12_500, output: 'built' });
  await logStep('alpha-box', tasks.build, 3, { command: 'npm test', exit_code: 0, started_at: start + 18, duration_ms: 31_000, output: 'all tests passed' });
  await sockets['alpha-box'].call('complete_task', { task_id: tasks.build, final_status: 'completed' });

  tasks.review = await createTask('alpha-box', 'Review the dependency update', 'reviewer', ['diff']);
  await logStep('alpha-box', tasks.review, 1, { command: 'git diff main', status: 'failed', exit_code: 128, duration_ms: 90, error: 'fatal: bad revision', recovery: 'fetched main first' });
  await sockets['alpha-box'].call('complete_task', { task_id: tasks.review, final_status: 'failed' });

  tasks.hostile = await createTask('alpha-box', `Summarise a web page ${PAYLOAD}`, 'scraper', ['fetch']);
  const longOutput = Array.from({ length: 400 }, (_, line) => `line ${line + 1} of the page`).join('\n');
  await logStep('alpha-box', tasks.hostile, 1, { command: `curl ${PAYLOAD}`, exit_code: 0, duration_ms: 800, output: `${PAYLOAD}\n${longOutput}` });
  await sockets['alpha-box'].call('complete_task', { task_id: tasks.hostile, final_status: 'completed' });

  tasks.deploy = await createTask('beta-box', 'Deploy to staging', 'builder', ['push', 'migrate', 'smoke test']);
  await logStep('beta-box', tasks.deploy, 1, { command: 'git push staging', exit_code: 0, started_at: start + 60, duration_ms: 2_000 });

  for (let batch = 1; batch <= BATCH_TASKS; batch++) await createTask('delta-box', `Batch job ${batch}`, 'batch', ['run']);

  for (const machine of MACHINES) await waitForPushed(sockets[machine]);
  chromium = await launchChromium();
  mkdirSync(SCREENSHOTS, { recursive: true });
  // Three daemons, 70 tasks pushed and a browser: slow when the machine is busy.
}, 180_000);

afterAll(async () => {
  for (const socket of Object.values(sockets)) socket.close();
  await chromium?.close();
});

/** A task's records as the daemon keeps them on disk (its checkpoint, then its journal's newer records), in seq order. */
function daemonRecordsOf(machine: string, taskId: string): ChainRecord[] {
  const { dataDir, dataFile } = daemons[machine];
  const checkpointed = existsSync(dataFile) ? readDataFileContent(dataFile).records : [];
  const bySeq = new Map([...checkpointed, ...readJournalRecords(dataDir)].map((record) => [record.seq, record]));
  return [...bySeq.values()].filter((record) => 'task_id' in record && record.task_id === taskId).sort((a, b) => a.seq - b.seq);
}

async function signIn(page: Page, token = site.tokens.reader): Promise<void> {
  await page.goto(`${site.cloud.httpBase}/`);
  await page.getByLabel('Token').fill(token);
  await page.getByLabel('Token').press('Enter');
  await page.getByRole('navigation', { name: 'Console' }).waitFor();
}

/** The page's problems; a 401 load is expected only where a test revokes the token. */
function expectNoProblems(problems: PageProblems, { allow401 = false } = {}): void {
  const errors = problems.consoleErrors.filter((text) => !(allow401 && text.includes('status of 401')));
  expect(errors).toEqual([]);
  expect(problems.pageErrors).toEqual([]);
  expect(problems.dialogs).toEqual([]);
}

/** The visible text of each row of a table's body. */
function rowTexts(page: Page, table: string): Promise<string[]> {
  return page.locator(`table.${table} tbody tr`).allInnerTexts();
}

describe('the fleet console in Chromium', () => {
  it('signs in with a reading token and lists every machine, sortable, with its head seq', async () => {
    const { context, page, problems } = await openPage(chromium.browser);
    await signIn(page);
    await page.locator('table.machines tbody tr').nth(MACHINES.length - 1).waitFor();
    const rows = await rowTexts(page, 'machines');
    expect(rows.map((row) => row.split(/\s/)[0])).toEqual(MACHINES);
    const alphaHead = (await sockets['alpha-box'].call('status', {})).last_seq;
    expect(await page.locator('tr[data-machine="alpha-box"] td').first().innerText()).toMatch(new RegExp(`^${alphaHead}\\b`));
    expect(await page.evaluate(() => location.href)).not.toContain(site.tokens.reader);

    // By head seq, highest first, then lowest first.
    await page.getByRole('button', { name: 'Head seq' }).click();
    expect((await rowTexts(page, 'machines')).map((row) => row.split(/\s/)[0])).toEqual(['delta-box', 'alpha-box', 'beta-box']);
    await page.getByRole('button', { name: /Head seq/ }).click();
    expect((await rowTexts(page, 'machines')).map((row) => row.split(/\s/)[0])).toEqual(['beta-box', 'alpha-box', 'delta-box']);
    await page.screenshot({ path: join(SCREENSHOTS, 'console-machines.png') });
    expectNoProblems(problems);
    await context.close();
  });

  it('marks a machine stale when its last push is older than the threshold in the URL', async () => {
    const { context, page, problems } = await openPage(chromium.browser);
    await signIn(page);
    await page.goto(`${site.cloud.httpBase}/?view=machines&stale=1`);
    await page.locator('tr.stale[data-machine="alpha-box"]').waitFor();
    expect(await page.locator('tr.stale').count()).toBe(MACHINES.length);
    expectNoProblems(problems);
    await context.close();
  });

  // Retried: on a loaded machine the view can be swapped under a fill (a UI race of the test, not of the assertions).
  it('filters tasks by agent and by status to exactly the matching tasks, the filters in the URL and not the token', { retry: 2 }, async () => {
    const { context, page, problems } = await openPage(chromium.browser);
    await signIn(page);
    await page.getByRole('link', { name: 'Tasks' }).click();
    // The Machines view is swapped out only once the Tasks view has loaded.
    await page.getByRole('heading', { name: 'Tasks', exact: true }).waitFor();
    await page.getByLabel('Machine').fill('alpha-box');
    await page.getByLabel('Machine').press('Enter');
    await page.waitForURL(/machine=alpha-box/);
    await page.getByText('3 tasks shown').waitFor();
    expect(await page.locator('table.tasks tbody tr').count()).toBe(3);
    await page.getByRole('link', { name: 'Clear' }).click();

    await page.getByLabel('Agent').fill('builder');
    await page.getByLabel('Agent').press('Enter');
    await page.waitForURL(/agent=builder/);
    await page.getByText('2 tasks shown').waitFor();
    expect((await page.locator('table.tasks tbody tr').evaluateAll((rows) => rows.map((row) => (row as HTMLElement).dataset.task))).sort()).toEqual(
      [tasks.build, tasks.deploy].sort(),
    );

    await page.goto(`${site.cloud.httpBase}/?view=tasks&status=failed`);
    await page.getByText('1 task shown').waitFor();
    expect(await page.locator('table.tasks tbody tr').evaluateAll((rows) => rows.map((row) => (row as HTMLElement).dataset.task))).toEqual([tasks.review]);
    expect(await page.getByLabel('Status').inputValue()).toBe('failed');
    expect(page.url()).not.toContain(site.tokens.reader);
    expectNoProblems(problems);
    await context.close();
  });

  it('pages the task list as the user scrolls, newest first', async () => {
    const { context, page, problems } = await openPage(chromium.browser);
    await signIn(page);
    await page.goto(`${site.cloud.httpBase}/?view=tasks&machine=delta-box`);
    await page.locator('table.tasks tbody tr').first().waitFor();
    expect(await page.locator('table.tasks tbody tr').count()).toBe(50);
    expect(await page.locator('table.tasks tbody tr').first().innerText()).toContain(`Batch job ${BATCH_TASKS}`);
    await page.getByRole('button', { name: 'Load more tasks' }).scrollIntoViewIfNeeded();
    await page.locator('table.tasks tbody tr').nth(BATCH_TASKS - 1).waitFor();
    expect(await page.locator('table.tasks tbody tr').count()).toBe(BATCH_TASKS);
    expect(await page.locator('table.tasks tbody tr').last().innerText()).toContain('Batch job 1\t');
    expect(await page.getByRole('button', { name: 'Load more tasks' }).isHidden()).toBe(true);
    expectNoProblems(problems);
    await context.close();
  });

  it('shows one task with every step, its exit code and duration, a timeline, and the chain note', async () => {
    const { context, page, problems } = await openPage(chromium.browser);
    await signIn(page);
    await page.goto(`${site.cloud.httpBase}/?view=tasks&agent=builder&machine=alpha-box`);
    await page.getByRole('link', { name: 'Build and test the release' }).click();
    await page.getByRole('heading', { name: 'Build and test the release' }).waitFor();
    const steps = page.locator('li.step');
    expect(await steps.count()).toBe(3);
    expect(await steps.locator('[data-field="exit_code"]').allInnerTexts()).toEqual(['0', '0', '0']);
    expect(await steps.locator('[data-field="duration"]').allInnerTexts()).toEqual(['4.20 s', '12.5 s', '31.0 s']);
    expect(await steps.locator('pre.command').allInnerTexts()).toEqual(['npm ci', 'npm run build', 'npm test']);
    expect(await page.locator('svg.timeline rect.timeline-bar').count()).toBe(3);
    expect(await page.locator('[data-task-status]').innerText()).toBe('completed');
    await page.getByRole('heading', { name: 'What the chain proves' }).waitFor();
    // Each step's hash and every record's seq and hash, equal to the daemon's records, the full value in the text.
    const records = daemonRecordsOf('alpha-box', tasks.build);
    expect(records.map((record) => record.type)).toEqual(['task_created', 'step_logged', 'step_logged', 'step_logged', 'task_completed']);
    const stepRecords = records.filter((record) => record.type === 'step_logged');
    expect(await steps.locator('[data-field="seq"]').allTextContents()).toEqual(stepRecords.map((record) => String(record.seq)));
    expect(await steps.locator('[data-field="hash"]').allTextContents()).toEqual(stepRecords.map((record) => record.hash));
    const chainRows = page.locator('table.chain tbody tr');
    expect(await chainRows.evaluateAll((rows) => rows.map((row) => [...row.querySelectorAll('td')].map((cell) => cell.textContent)))).toEqual(
      records.map((record) => [String(record.seq), record.hash, record.prev_hash]),
    );
    // Shortened on screen: the hash is wider than the box that shows it.
    expect(await steps.locator('[data-field="hash"]').first().evaluate((code) => code.scrollWidth > code.clientWidth)).toBe(true);
    expect(await steps.locator('[data-field="hash"]').first().evaluate((code) => getComputedStyle(code).fontFamily)).toContain('monospace');
    await page.screenshot({ path: join(SCREENSHOTS, 'console-task.png'), fullPage: true });

    await page.goto(`${site.cloud.httpBase}/?view=task&machine=alpha-box&task=${tasks.review}`);
    const failed = page.locator('li.step').first();
    await failed.waitFor();
    expect(await failed.locator('[data-field="exit_code"]').innerText()).toBe('128');
    expect(await failed.locator('pre.field-error').innerText()).toBe('fatal: bad revision');
    expect(await failed.locator('pre.field-recovery').innerText()).toBe('fetched main first');
    expectNoProblems(problems);
    await context.close();
  });

  it('shows a planted HTML/JS payload as text, collapsed when long, and runs nothing', async () => {
    const { context, page, problems } = await openPage(chromium.browser);
    await signIn(page);
    await page.goto(`${site.cloud.httpBase}/?view=task&machine=alpha-box&task=${tasks.hostile}`);
    const output = page.locator('details.field-block');
    await output.waitFor();
    expect(await page.locator('h1').innerText()).toBe(`Summarise a web page ${PAYLOAD}`);
    expect(await page.locator('pre.command').innerText()).toBe(`curl ${PAYLOAD}`);
    expect(await output.getAttribute('open')).toBeNull();
    await output.locator('summary').press('Enter');
    expect((await output.locator('pre').innerText()).startsWith(PAYLOAD)).toBe(true);
    expect(await page.evaluate(() => ({ pwned: (window as { __pwned?: number }).__pwned, images: document.images.length, scripts: document.scripts.length }))).toEqual({
      pwned: undefined,
      images: 0,
      scripts: 1,
    });
    expectNoProblems(problems);
    await context.close();
  });

  it('shows a step logged on a daemon in an open task page within 2 s, without a reload', async () => {
    const { context, page, problems } = await openPage(chromium.browser);
    await signIn(page);
    await page.goto(`${site.cloud.httpBase}/?view=task&machine=beta-box&task=${tasks.deploy}`);
    await page.locator('li.step').first().waitFor();
    await page.locator('.live-state[data-state="live"]').waitFor();
    await page.evaluate(() => ((window as { __samePage?: boolean }).__samePage = true));
    const logged = Date.now();
    await logStep('beta-box', tasks.deploy, 2, { command: 'npm run migrate', exit_code: 0, duration_ms: 1_500, output: 'migrated' });
    await page.locator('li.step[data-step="2"]').waitFor({ timeout: 2_000 });
    console.log(`console live latency (file backend): a logged step shown ${Date.now() - logged} ms after log_step was sent`);
    expect(await page.evaluate(() => (window as { __samePage?: boolean }).__samePage)).toBe(true);
    expectNoProblems(problems);
    await context.close();
  });

  it('is usable at 390 px wide by keyboard alone', async () => {
    const { context, page, problems } = await openPage(chromium.browser, { width: 390, height: 844 });
    await signIn(page);
    await page.locator('table.machines tbody tr').first().waitFor();
    // Tab through the header to the Tasks link and follow it with Enter.
    await page.locator('body').focus();
    for (let tabs = 0; tabs < 8 && (await page.evaluate(() => document.activeElement?.textContent)) !== 'Tasks'; tabs++) await page.keyboard.press('Tab');
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Tasks' }).waitFor();
    await page.locator('table.tasks tbody tr').first().waitFor();
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    await page.goto(`${site.cloud.httpBase}/?view=task&machine=alpha-box&task=${tasks.build}`);
    await page.locator('li.step').first().waitFor();
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    expectNoProblems(problems);
    await context.close();
  });

  it('lists a refused forked batch as an incident and highlights its machine', async () => {
    const { context, page, problems } = await openPage(chromium.browser);
    await signIn(page);
    await page.getByRole('link', { name: 'Incidents' }).click();
    await page.getByText('No refused batch or fork recorded.').waitFor();

    // A different record at seq 1 of alpha-box, pushed with its own token: refused as a fork.
    const forger = await openCloudSocket(site.cloud.url, site.tokens.machine['alpha-box']);
    const refused = await forger.request('push', { machine_id: 'alpha-box', records: makeChain(1, { machineId: 'alpha-box', tag: 'forged' }) });
    forger.close();
    expect(refused.error.data.reason).toBe('fork');

    await page.getByRole('link', { name: 'Machines' }).click();
    await page.locator('tr.has-incidents[data-machine="alpha-box"]').waitFor();
    await page.locator('tr[data-machine="alpha-box"] a.incident-badge').click();
    await page.getByRole('heading', { name: 'Incidents of alpha-box' }).waitFor();
    expect(await page.locator('table.incidents tbody tr').evaluateAll((rows) => rows.map((row) => (row as HTMLElement).dataset.reason))).toEqual(['fork']);
    expectNoProblems(problems);
    await context.close();
  });

  it('draws live refreshes in the order they were asked, and loads a view again after the endpoint failed it', async () => {
    const { context, page, problems } = await openPage(chromium.browser);
    const taskId = await createTask('alpha-box', 'Rotate the keys', 'operator', ['list', 'rotate', 'check']);
    await signIn(page);
    await page.goto(`${site.cloud.httpBase}/?view=task&machine=alpha-box&task=${taskId}`);
    await page.getByRole('heading', { name: 'Rotate the keys' }).waitFor();
    await page.locator('.live-state[data-state="live"]').waitFor();

    // The answer to the first refresh (step 1) is held back until after step 2 is logged: drawn late, it would hide step 2.
    const taskPath = `**/v1/machines/alpha-box/tasks/${taskId}`;
    let releaseHeld!: () => void;
    const held = new Promise<void>((resolve) => (releaseHeld = resolve));
    let asked = false;
    await page.route(taskPath, async (route) => {
      asked = true;
      const answer = await route.fetch();
      await held;
      await route.fulfill({ response: answer });
    }, { times: 1 });
    await logStep('alpha-box', taskId, 1, { command: 'vault list', exit_code: 0, duration_ms: 40 });
    await waitForPushed(sockets['alpha-box']);
    await waitFor(() => asked, 5_000, 'the page to ask for the task after step 1');
    await logStep('alpha-box', taskId, 2, { command: 'vault rotate', exit_code: 0, duration_ms: 900 });
    await waitForPushed(sockets['alpha-box']);
    await sleep(500);
    releaseHeld();
    await page.locator('li.step[data-step="2"]').waitFor({ timeout: 5_000 });
    await sleep(500);
    expect(await page.locator('li.step').count()).toBe(2);

    // The endpoint fails the refresh of step 3 (503): the page says so, then loads the task again by itself.
    await page.route(taskPath, (route) => route.fulfill({ status: 503, contentType: 'application/json', body: JSON.stringify({ error: 'storage unavailable' }) }), { times: 1 });
    await logStep('alpha-box', taskId, 3, { command: 'vault check', exit_code: 0, duration_ms: 60 });
    await page.getByRole('alert').filter({ hasText: 'answered 503: storage unavailable' }).waitFor({ timeout: 5_000 });
    await page.locator('li.step[data-step="3"]').waitFor({ timeout: 5_000 });
    expect(await page.getByRole('alert').count()).toBe(0);
    const failedLoad = (text: string) => text.includes('status of 503');
    expectNoProblems({ ...problems, consoleErrors: problems.consoleErrors.filter((text) => !failedLoad(text)) });
    await context.close();
  });

  it('reconnects its live feed after the endpoint restarts, and signs out with a message when the token is revoked', async () => {
    const { context, page, problems } = await openPage(chromium.browser);
    await signIn(page);
    await page.goto(`${site.cloud.httpBase}/?view=task&machine=beta-box&task=${tasks.deploy}`);
    await page.locator('.live-state[data-state="live"]').waitFor();

    // A step logged while the endpoint is down, pushed once it is back on the same port and data:
    // the page reconnects by itself and shows it, whether its feed was back before the push or after.
    site.cloud.proc.kill('SIGTERM');
    await site.cloud.exited;
    await page.locator('.live-state[data-state="reconnecting"]').waitFor();
    await logStep('beta-box', tasks.deploy, 3, { command: 'curl -f https://staging/health', exit_code: 0, duration_ms: 300 });
    site.cloud = await startCloud(site.storage, { tokensFile: site.tokensFile, port: site.port });
    await page.locator('.live-state[data-state="live"]').waitFor({ timeout: 15_000 });
    await waitForPushed(sockets['beta-box']);
    await page.locator('li.step[data-step="3"]').waitFor({ timeout: 10_000 });

    // The file backend's revocation: the endpoint restarted on a tokens file without the reader's token.
    site.cloud.proc.kill('SIGTERM');
    await site.cloud.exited;
    const machinesOnly = writeTokensFile(MACHINES.map((id) => ({ token: site.tokens.machine[id], machine_id: id })));
    site.cloud = await startCloud(site.storage, { tokensFile: machinesOnly, port: site.port });
    await page.getByRole('heading', { name: 'Sign in to the fleet console' }).waitFor({ timeout: 15_000 });
    expect(await page.locator('#sign-in-message').innerText()).toMatch(/refused this token.*revoked/);
    expect(await page.evaluate(() => sessionStorage.getItem('taskhistory.token'))).toBeNull();
    // Chromium itself logs the 401 and the broken and refused connections of the live feed and of the view's reloads
    // while the endpoint was down; the page logs nothing.
    const networkFailures = (text: string) => /net::ERR_\w+ \(\S+\/v1\/(events|machines\/beta-box\/tasks\/\S+)\)$/.test(text);
    expectNoProblems({ ...problems, consoleErrors: problems.consoleErrors.filter((text) => !networkFailures(text)) }, { allow401: true });
    await context.close();
  });
});
