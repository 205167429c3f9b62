import { readdirSync, readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { extname, join } from 'node:path';

/**
 * Serves the fleet console built by `npm run build` (dist/console/): index.html at `/`, and the
 * content-hashed assets under `/assets/`. Read once at start: they change only with a new build.
 */
const CONSOLE_DIR = join(import.meta.dirname, '..', 'console');

/** No inline script or style and no eval: an agent's text that slipped into the DOM as HTML could run nothing. */
const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
};

interface Asset {
  body: Buffer;
  headers: Record<string, string>;
}

const SECURITY_HEADERS = {
  'content-security-policy': CONTENT_SECURITY_POLICY,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
};

export class ConsoleAssets {
  private constructor(private readonly byPath: Map<string, Asset>) {}

  /** The built console, or an empty set (every console path 404s, with a hint) when it was not built. */
  static load(dir = CONSOLE_DIR): ConsoleAssets {
    const byPath = new Map<string, Asset>();
    let assetNames: string[];
    try {
      byPath.set('/', asset(readFileSync(join(dir, 'index.html')), '.html', 'no-cache'));
      assetNames = readdirSync(join(dir, 'assets'));
    } catch {
      return new ConsoleAssets(byPath);
    }
    for (const name of assetNames) {
      // Hashed names never change content, so browsers may keep them for a year.
      byPath.set(`/assets/${name}`, asset(readFileSync(join(dir, 'assets', name)), extname(name), 'public, max-age=31536000, immutable'));
    }
    return new ConsoleAssets(byPath);
  }

  /** Whether the request target (path and query) belongs to the console, so that nothing else answers it. */
  static claims(target: string | undefined): boolean {
    const pathname = pathOf(target);
    return pathname === '/' || pathname === '/index.html' || pathname.startsWith('/assets/');
  }

  serve(req: IncomingMessage, res: ServerResponse): void {
    const pathname = pathOf(req.url);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', ...SECURITY_HEADERS }).end();
      return;
    }
    const found = this.byPath.get(pathname === '/index.html' ? '/' : pathname);
    if (!found) {
      const hint = this.byPath.size === 0 ? ' (the console was not built: run npm run build)' : '';
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8', ...SECURITY_HEADERS }).end(`no such console file: ${pathname}${hint}\n`);
      return;
    }
    res.writeHead(200, found.headers);
    res.end(req.method === 'HEAD' ? undefined : found.body);
  }
}

/** The path of a request target; the query (the console's view state) does not choose the file. */
function pathOf(target: string | undefined): string {
  return (target ?? '').split('?')[0];
}

function asset(body: Buffer, extension: string, cacheControl: string): Asset {
  return {
    body,
    headers: {
      'content-type': CONTENT_TYPES[extension] ?? 'application/octet-stream',
      'content-length': String(body.length),
      'cache-control': cacheControl,
      ...SECURITY_HEADERS,
    },
  };
}
