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

  const fail = (error: unknown) => {
    if (stopped) return;
    if (error instanceof Unauthorized) return leave(error.message);
    replaceChildren(main, el('p', { class: 'message error', role: 'alert' }, error instanceof ApiError ? error.message : `The page failed: ${(error as Error).message}`));
  };

  const render = () => {
    const { view, params } = currentState();
    const ticket = ++rendering;
    for (const link of nav.querySelectorAll('a')) {
      if (link.dataset.view === view || (view === 'task' && link.dataset.view === 'tasks')) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    VIEWS[view]({ api, params }).then((shown) => {
      if (ticket !== rendering || stopped) return;
      current = shown;
      document.title = `${shown.title} · taskhistory`;
      replaceChildren(main, shown.element);
    }, fail);
  };

  // At most one refresh per LIVE_COALESCE_MS however fast pushes arrive; one of several machines' events stands for all.
  let refreshTimer: ReturnType<typeof setTimeout> | undefined;
  let pending: { event?: StoredEvent } | null = null;
  const refresh = (event?: StoredEvent) => {
    if (pending) {
      if (pending.event?.machine_id !== event?.machine_id) pending.event = undefined;
      return;
    }
    pending = { event };
    refreshTimer = setTimeout(() => {
      const due = pending?.event;
      pending = null;
      void current?.refresh?.(due).catch(fail);
    }, LIVE_COALESCE_MS);
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
