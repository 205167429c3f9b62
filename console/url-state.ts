/**
 * What the page shows lives in its query string, so a view can be shared by its URL. The token
 * never does (see session.ts).
 */
export type ViewName = 'machines' | 'tasks' | 'task' | 'incidents';

const VIEWS: readonly ViewName[] = ['machines', 'tasks', 'task', 'incidents'];

/** The fleet query's task filters (GET /v1/tasks), kept in the URL under the same names. */
export const TASK_FILTERS = ['machine', 'agent', 'status', 'since', 'until', 'q'] as const;
export type TaskFilter = (typeof TASK_FILTERS)[number];

export interface PageState {
  view: ViewName;
  params: URLSearchParams;
}

export function currentState(): PageState {
  const params = new URLSearchParams(location.search);
  const view = params.get('view') as ViewName | null;
  return { view: view && VIEWS.includes(view) ? view : 'machines', params };
}

/** The page-relative link for a view and its parameters; empty parameters are left out. */
export function viewHref(view: ViewName, params: Record<string, string | undefined> = {}): string {
  const query = new URLSearchParams({ view });
  for (const [name, value] of Object.entries(params)) if (value) query.set(name, value);
  return `?${query.toString()}`;
}

export function navigate(href: string, replace = false): void {
  if (replace) history.replaceState(null, '', href);
  else history.pushState(null, '', href);
  window.dispatchEvent(new PopStateEvent('popstate'));
}
