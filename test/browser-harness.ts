import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { sleep, spawnTracked, tempDir, waitFor, type Spawned } from './processes.js';

/** Debian's chromium package; .ci/run installs it when missing. Playwright's own browser download cannot work here. */
export const CHROMIUM = '/usr/bin/chromium';

/** Without these, a headless Chromium on a closed network spends its time failing to reach Google's services. */
const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

export interface TestBrowser {
  browser: Browser;
  process: Spawned;
  /** Asks Chromium to quit, then kills its process group (by its pid) so that no helper outlives the test. */
  close(): Promise<void>;
}

/**
 * Starts the real Chromium binary with a fresh profile in a temp dir and connects playwright-core
 * to it over the DevTools protocol on a loopback port. The process is ours (spawnTracked), so it is
 * killed by pid even when a test fails.
 */
export async function launchChromium(): Promise<TestBrowser> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing; install it with: apt-get install -y chromium`);
  const profile = join(tempDir('chromium-profile-'), 'profile');
  // Its own process group, so that its renderer and helper processes end with it.
  const child = spawnTracked(CHROMIUM, [...CHROMIUM_FLAGS, `--user-data-dir=${profile}`, '--remote-debugging-address=127.0.0.1', '--remote-debugging-port=0', 'about:blank'], {
    detached: true,
  });
  const endpoint = await waitFor(() => {
    if (child.proc.exitCode !== null) throw new Error(`chromium exited during start-up:\n${child.stderr()}`);
    return /DevTools listening on (ws:\/\/\S+)/.exec(child.stderr())?.[1];
  }, 30_000, 'chromium to open its DevTools endpoint');
  const browser = await chromium.connectOverCDP(endpoint);
  return {
    browser,
    process: child,
    async close() {
      const session = await browser.newBrowserCDPSession().catch(() => null);
      await session?.send('Browser.close').catch(() => undefined);
      const exited = await Promise.race([child.exited.then(() => true), sleep(5_000).then(() => false)]);
      try {
        // The group: helpers may outlive the main process for a moment and keep writing the profile.
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
      if (!exited) await child.exited;
    },
  };
}

/** Everything a page reported that a user would call broken: console errors, uncaught exceptions, dialogs. */
export interface PageProblems {
  consoleErrors: string[];
  pageErrors: string[];
  dialogs: string[];
}

/** A fresh context (no shared storage) and page of the given size, with its problems recorded. */
export async function openPage(browser: Browser, viewport = { width: 1280, height: 800 }): Promise<{ context: BrowserContext; page: Page; problems: PageProblems }> {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const problems: PageProblems = { consoleErrors: [], pageErrors: [], dialogs: [] };
  page.on('console', (message) => {
    if (message.type() === 'error') problems.consoleErrors.push(`${message.text()} (${message.location().url})`);
  });
  page.on('pageerror', (error) => problems.pageErrors.push(error.message));
  page.on('dialog', (dialog) => {
    problems.dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    void dialog.dismiss();
  });
  return { context, page, problems };
}
