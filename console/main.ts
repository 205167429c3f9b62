import { ApiError, FleetApi, Unauthorized } from './api.js';
import { el, replaceChildren } from './dom.js';
import { LiveFeed, type FeedState, type StoredEvent } from './live-feed.js';
import { signOut, storedToken } from './session.js';
import { currentState, navigate, viewHref, type ViewName } from './url-state.js';
import { incidentsView } from './views/incidents-view.js';
import { machinesView } from './views/machines-view.js';
import { signInView } from './views/sign-in-view.js';
import { tasksView } from './views/tasks-view.js';
import { taskView } from './views/task-view.js';
import type { View, ViewContext } from './views/view.js';

// The console's shell: sign-in or the signed-in frame (navigation, live state, the current view).

const VIEWS: Record<ViewName, (context: ViewContext) => Promise<View>> = {
  machines: machinesView,
  tasks: tasksView,
  task: taskView,
  incidents: incidentsView,
};

/** Live events arriving in a burst (daemons pushing batches) are taken as one refresh. */
const LIVE_COALESCE_MS = 100;
/** A view that failed to load is loaded again after this, doubling up to MAX_RETRY_MS. */
const FIRST_RETRY_MS = 1_000;
const MAX_RETRY_MS = 10_000;

const app = document.getElementById('app') as HTMLElement;

function showSignIn(): void {
  document.title = 'Sign in · taskhistory';
  replaceChildren(app, el('main', { id: 'main', class: 'narrow' }, signInView(start)));
}

function showConsole(token: string): void {
  const api = new FleetApi(token);
  const main = el('main', { id: 'main', tabindex: '-1' });
  const liveState = el('span', { class: 'live-state', role: 'status', 'data-state': 'connecting' }, 'connecting…');
  const signOutButton = el('button', { type: 'button', class: 'sign-out' }, 'Sign out');
  const nav = el(
    'nav',
    { 'aria-label': 'Console' },
    ...(['machines', 'tasks', 'incidents'] as const).map((view) => el('a', { href: viewHref(view), 'data-view': view }, view[0].toUpperCase() + view.slice(1))),
  );
  replaceChildren(app, el('header', { class: 'top' }, el('span', { class: 'brand' }, 'taskhistory'), nav, liveState, signOutButton), main);

  let current: View | null = null;
  let rendering = 0;
  let stopped = false;

  // A view the endpoint could not serve (down, or failing) is loaded again later, since no event may come to do it.
  let retryTimer: ReturnType<typeof setTimeout> | undefined;
  let retryMs = FIRST_RETRY_MS;
  const fail = (error: unknown) => {
    if (stopped) return;
    if (error instanceof Unauthorized) return leave(error.message);
    // The view is gone from the page: the next refresh draws it anew.
    current = null;
    replaceChildren(main, el('p', { class: 'message error', role: 'alert' }, error instanceof ApiError ? error.message : `The page failed: ${(error as Error).message}`));
    if (error instanceof ApiError && (error.status === 0 || error.status >= 500)) {
      clearTimeout(retryTimer);
      retryTimer = setTimeout(() => refresh(), retryMs);
      retryMs = Math.min(retryMs * 2, MAX_RETRY_MS);
    }
  };

  const render = () => {
    const { view, params } = currentState();
    const ticket = ++rendering;
    for (const link of nav.querySelectorAll('a')) {
      if (link.dataset.view === view || (view === 'task' && link.dataset.view === 'tasks')) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    return VIEWS[view]({ api, params }).then(
      (shown) => {
        if (ticket !== rendering || stopped) return;
        current = shown;
        retryMs = FIRST_RETRY_MS;
        document.title = `${shown.title} · taskhistory`;
        replaceChildren(main, shown.element);
      },
      (error: unknown) => {
        if (ticket === rendering) fail(error);
      },
    );
  };

  // At most one refresh per LIVE_COALESCE_MS however fast pushes arrive; one of several machines' events stands for all.
  // One at a time, so that an older answer never draws over a newer one.
  let refreshTimer: ReturnType<typeof setTimeout> | undefined;
  let pending: { event?: StoredEvent } | null = null;
  let refreshing = false;
  const refresh = (event?: StoredEvent) => {
    if (pending) {
      if (pending.event?.machine_id !== event?.machine_id) pending.event = undefined;
      return;
    }
    pending = { event };
    if (!refreshing) schedule();
  };
  const schedule = () => {
    refreshTimer = setTimeout(() => void runRefresh(), LIVE_COALESCE_MS);
  };
  const runRefresh = async () => {
    const due = pending?.event;
    pending = null;
    refreshing = true;
    const shown = current;
    try {
      await (shown ? shown.refresh?.(due) : render());
    } catch (error) {
      if (current === shown) fail(error);
    }
    refreshing = false;
    if (pending && !stopped) schedule();
  };
  let everLive = false;
  const feed = new LiveFeed(
    api.headers,
    refresh,
    (state: FeedState) => {
      // Back after an outage: pushes made meanwhile sent no event that reached this page.
      if (state === 'live' && everLive) refresh();
      everLive ||= state === 'live';
      liveState.dataset.state = state;
      liveState.textContent = state === 'live' ? 'live' : state === 'connecting' ? 'connecting…' : 'reconnecting…';
    },
    (error) => leave(error.message),
  );

  function leave(notice?: string): void {
    stopped = true;
    feed.stop();
    clearTimeout(refreshTimer);
    clearTimeout(retryTimer);
    window.removeEventListener('popstate', render);
    signOut(notice);
    showSignIn();
  }

  signOutButton.addEventListener('click', () => leave());
  window.addEventListener('popstate', render);
  render();
}

function start(): void {
  const token = storedToken();
  if (token) showConsole(token);
  else showSignIn();
}

// Links inside the page change the view without a reload; modified clicks keep their usual meaning.
document.addEventListener('click', (event) => {
  const link = (event.target as Element | null)?.closest('a');
  if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const href = link.getAttribute('href');
  if (!href?.startsWith('?')) return;
  event.preventDefault();
  navigate(href);
  document.getElementById('main')?.focus();
});

start();
