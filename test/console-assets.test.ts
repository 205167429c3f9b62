import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium, openPage, type TestBrowser } from './browser-harness.js';
import { fileBackend } from './cloud-harness.js';
import { startConsoleSite, type ConsoleSite } from './console-site.js';
import { REPO } from './daemon-harness.js';

/** Ways text becomes markup or code; none may appear in the console's sources or its bundle. */
const HTML_OR_CODE_SINKS = /\b(innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\s*\(|new Function\b)/;

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).map((name) => join(dir, name)).filter((path) => /\.(ts|js)$/.test(path));
}

let site: ConsoleSite;
let chromium: TestBrowser;

beforeAll(async () => {
  site = await startConsoleSite(await fileBackend.newSite(), []);
  chromium = await launchChromium();
});
afterAll(async () => {
  await chromium?.close();
});

describe('the console is served by taskhistory-cloud', () => {
  it('serves index.html uncached and hashed assets for a year, all under a strict CSP with nosniff', async () => {
    const index = await fetch(`${site.cloud.httpBase}/`);
    expect(index.status).toBe(200);
    expect(index.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(index.headers.get('cache-control')).toBe('no-cache');
    const csp = index.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("default-src 'none'");
    expect(csp).not.toContain('unsafe-inline');
    expect(csp).not.toContain('unsafe-eval');
    expect(index.headers.get('x-content-type-options')).toBe('nosniff');
    const html = await index.text();
    expect(html).not.toMatch(/<script>|<script [^>]*>[^<]|<style|\sstyle=|\son\w+=/i);

    const assets = [...html.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)].map((match) => match[1]);
    expect(assets.map((path) => /-[A-Z0-9]{8}\.(js|css)$/.test(path))).toEqual([true, true]);
    for (const path of assets) {
      const response = await fetch(`${site.cloud.httpBase}${path}`);
      expect(response.status).toBe(200);
      expect(response.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
      expect(response.headers.get('x-content-type-options')).toBe('nosniff');
      expect(response.headers.get('content-type')).toMatch(path.endsWith('.js') ? /^text\/javascript/ : /^text\/css/);
    }
    expect((await fetch(`${site.cloud.httpBase}/assets/missing-00000000.js`)).status).toBe(404);
    expect((await fetch(`${site.cloud.httpBase}/`, { method: 'POST' })).status).toBe(405);
  });

  it('has no HTML or eval sink in its sources or in the bundle it serves', () => {
    const files = [...filesUnder(join(REPO, 'console')), ...filesUnder(join(REPO, 'dist', 'console', 'assets'))];
    expect(files.length).toBeGreaterThan(5);
    expect(files.filter((path) => HTML_OR_CODE_SINKS.test(readFileSync(path, 'utf8')))).toEqual([]);
  });

  it('opens on the sign-in form with the token field focused, refuses a wrong token with a message, and logs no console error', async () => {
    const { context, page, problems } = await openPage(chromium.browser);
    await page.goto(`${site.cloud.httpBase}/`);
    await page.getByRole('heading', { name: 'Sign in to the fleet console' }).waitFor();
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('token');
    expect(problems.consoleErrors).toEqual([]);

    await page.keyboard.type('not-a-token');
    await page.keyboard.press('Enter');
    await page.getByText('This token was refused: it is wrong or has been revoked.').waitFor();
    expect(await page.evaluate(() => sessionStorage.getItem('taskhistory.token'))).toBeNull();
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('token');
    // Chromium itself logs the refused request (401) as a failed load; the page logs nothing.
    expect(problems.consoleErrors.filter((text) => !text.includes('status of 401'))).toEqual([]);
    expect(problems.pageErrors).toEqual([]);
    await context.close();
  });
});
