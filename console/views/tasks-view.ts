import type { FleetTaskSummary } from '../../protocol/fleet-api.js';
import { el } from '../dom.js';
import { STATUSES } from '../fleet-contract.js';
import { absoluteTime, relativeTime, toDate } from '../format.js';
import { navigate, TASK_FILTERS, viewHref } from '../url-state.js';
import type { View, ViewContext } from './view.js';

const PAGE_SIZE = 50;

/** The fleet's tasks, newest first, filtered by the URL's parameters and paged by the API's cursor. */
export async function tasksView({ api, params }: ViewContext): Promise<View> {
  const filters = new URLSearchParams();
  for (const name of TASK_FILTERS) {
    const value = params.get(name);
    if (value) filters.set(name, name === 'since' || name === 'until' ? apiTime(value) : value);
  }
  filters.set('limit', String(PAGE_SIZE));

  const rows = new Map<string, HTMLTableRowElement>();
  const body = el('tbody');
  const status = el('p', { class: 'summary', 'aria-live': 'polite' });
  const more = el('button', { type: 'button', class: 'more' }, 'Load more tasks');
  let cursor: string | null = null;
  let loading = false;

  const show = (tasks: FleetTaskSummary[], where: 'append' | 'top') => {
    const fresh: HTMLTableRowElement[] = [];
    for (const task of tasks) {
      const key = `${task.machine_id}\u0000${task.task_id}`;
      const row = taskRow(task);
      const existing = rows.get(key);
      if (existing) existing.replaceWith(row);
      else fresh.push(row);
      rows.set(key, row);
    }
    if (where === 'append') body.append(...fresh);
    else body.prepend(...fresh);
    status.textContent = rows.size === 0 ? 'No task matches these filters.' : `${rows.size} task${rows.size === 1 ? '' : 's'} shown${cursor ? ', more below' : ''}`;
    more.hidden = cursor === null;
  };

  const loadNextPage = async () => {
    if (loading || cursor === null) return;
    loading = true;
    try {
      const page = await api.tasks(withCursor(filters, cursor));
      cursor = page.next_cursor;
      show(page.tasks, 'append');
    } finally {
      loading = false;
    }
  };

  const first = await api.tasks(filters);
  cursor = first.next_cursor;
  show(first.tasks, 'append');
  more.addEventListener('click', () => void loadNextPage());
  // Paging as the user scrolls: the button doubles as the sentinel, and stays for keyboard users.
  new IntersectionObserver((entries) => {
    if (entries.some((entry) => entry.isIntersecting)) void loadNextPage();
  }).observe(more);

  return {
    title: 'Tasks',
    element: el(
      'section',
      { 'aria-labelledby': 'tasks-heading' },
      el('h1', { id: 'tasks-heading' }, 'Tasks'),
      filterForm(params),
      status,
      el(
        'div',
        { class: 'table-scroll' },
        el(
          'table',
          { class: 'tasks' },
          el('thead', {}, el('tr', {}, ...['Created', 'Machine', 'Agent', 'Description', 'Status', 'Steps'].map((label) => el('th', { scope: 'col' }, label)))),
          body,
        ),
      ),
      more,
    ),
    // A live record may create or change any task on the first page: fetch it again and merge.
    async refresh() {
      const page = await api.tasks(filters);
      if (rows.size === 0) cursor = page.next_cursor;
      show(page.tasks, 'top');
    },
  };
}

function withCursor(filters: URLSearchParams, cursor: string): URLSearchParams {
  const next = new URLSearchParams(filters);
  next.set('cursor', cursor);
  return next;
}

/** The datetime-local input's value (the user's local time) as the API's Unix seconds. */
function apiTime(value: string): string {
  const time = new Date(value).getTime();
  return Number.isNaN(time) ? value : String(time / 1000);
}

function taskRow(task: FleetTaskSummary): HTMLTableRowElement {
  const created = toDate(task.timestamp);
  return el(
    'tr',
    { 'data-task': task.task_id, 'data-status': task.status },
    el('td', {}, el('time', { datetime: created?.toISOString(), title: absoluteTime(created) }, relativeTime(created))),
    el('td', {}, task.machine_id),
    el('td', {}, task.agent ?? '—'),
    el('td', {}, el('a', { href: viewHref('task', { machine: task.machine_id, task: task.task_id }) }, task.description || task.task_id)),
    el('td', {}, el('span', { class: `status status-${task.status}` }, task.status)),
    el('td', { class: 'num' }, `${task.steps.length}/${task.planned_steps}`),
  );
}

function filterForm(params: URLSearchParams): HTMLFormElement {
  const field = (name: string, label: string, control: HTMLInputElement | HTMLSelectElement) => {
    control.id = `filter-${name}`;
    control.name = name;
    control.value = params.get(name) ?? '';
    return el('div', { class: 'field' }, el('label', { for: control.id }, label), control);
  };
  const statusSelect = el('select', {}, el('option', { value: '' }, 'any'), ...STATUSES.map((value) => el('option', { value }, value)));
  const form = el(
    'form',
    { class: 'filters', role: 'search', 'aria-label': 'Filter tasks' },
    field('machine', 'Machine', el('input', { type: 'text', autocomplete: 'off' })),
    field('agent', 'Agent', el('input', { type: 'text', autocomplete: 'off' })),
    field('status', 'Status', statusSelect),
    field('since', 'Since', el('input', { type: 'datetime-local' })),
    field('until', 'Until', el('input', { type: 'datetime-local' })),
    field('q', 'Text', el('input', { type: 'search', placeholder: 'description or command' })),
    el('div', { class: 'field actions' }, el('button', { type: 'submit' }, 'Filter'), el('a', { href: viewHref('tasks') }, 'Clear')),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const values: Record<string, string> = {};
    for (const name of TASK_FILTERS) values[name] = String(new FormData(form).get(name) ?? '').trim();
    navigate(viewHref('tasks', values));
  });
  return form;
}
