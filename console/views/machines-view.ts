import type { FleetMachine } from '../../protocol/fleet-api.js';
import { el, replaceChildren } from '../dom.js';
import { absoluteTime, relativeTime, shortHash, toDate } from '../format.js';
import { viewHref } from '../url-state.js';
import type { View, ViewContext } from './view.js';

/** A machine that has not pushed for this long is marked stale; `?stale=<seconds>` overrides it. */
const DEFAULT_STALE_SECONDS = 15 * 60;

type SortKey = 'machine_id' | 'acked_seq' | 'last_push_at' | 'running' | 'tasks' | 'incidents';

const COLUMNS: { key: SortKey; label: string; numeric: boolean }[] = [
  { key: 'machine_id', label: 'Machine', numeric: false },
  { key: 'acked_seq', label: 'Head seq', numeric: true },
  { key: 'last_push_at', label: 'Last push', numeric: true },
  { key: 'running', label: 'Running', numeric: true },
  { key: 'tasks', label: 'Tasks', numeric: true },
  { key: 'incidents', label: 'Incidents', numeric: true },
];

export async function machinesView({ api, params }: ViewContext): Promise<View> {
  const staleSeconds = Number(params.get('stale')) > 0 ? Number(params.get('stale')) : DEFAULT_STALE_SECONDS;
  let machines = await api.machines();
  let sort: { key: SortKey; descending: boolean } = { key: 'machine_id', descending: false };
  const head = el('thead');
  const body = el('tbody');
  const summary = el('p', { class: 'summary', 'aria-live': 'polite' });

  const sortValue = (machine: FleetMachine, key: SortKey): string | number =>
    key === 'last_push_at' ? (toDate(machine.last_push_at)?.getTime() ?? 0) : machine[key];

  const draw = () => {
    replaceChildren(
      head,
      el(
        'tr',
        {},
        ...COLUMNS.map((column) => {
          const active = sort.key === column.key;
          const button = el('button', { type: 'button', class: 'sort' }, column.label, active ? (sort.descending ? ' ▼' : ' ▲') : '');
          button.addEventListener('click', () => {
            sort = { key: column.key, descending: active ? !sort.descending : column.numeric };
            draw();
          });
          return el('th', { scope: 'col', 'aria-sort': active ? (sort.descending ? 'descending' : 'ascending') : 'none', class: column.numeric ? 'num' : undefined }, button);
        }),
      ),
    );
    const sorted = [...machines].sort((a, b) => {
      const [x, y] = [sortValue(a, sort.key), sortValue(b, sort.key)];
      const order = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y));
      return sort.descending ? -order : order;
    });
    const now = Date.now();
    replaceChildren(body, ...sorted.map((machine) => machineRow(machine, now, staleSeconds)));
    const stale = machines.filter((machine) => isStale(machine, now, staleSeconds)).length;
    replaceChildren(summary, `${machines.length} machine${machines.length === 1 ? '' : 's'}`, stale ? `, ${stale} stale (no push for ${staleSeconds} s or more)` : '');
  };
  draw();

  return {
    title: 'Machines',
    element: el(
      'section',
      { 'aria-labelledby': 'machines-heading' },
      el('h1', { id: 'machines-heading' }, 'Machines'),
      summary,
      el('div', { class: 'table-scroll' }, el('table', { class: 'machines' }, head, body)),
    ),
    async refresh() {
      machines = await api.machines();
      draw();
    },
  };
}

function isStale(machine: FleetMachine, now: number, staleSeconds: number): boolean {
  const pushed = toDate(machine.last_push_at);
  return !pushed || now - pushed.getTime() > staleSeconds * 1000;
}

function machineRow(machine: FleetMachine, now: number, staleSeconds: number): HTMLTableRowElement {
  const pushed = toDate(machine.last_push_at);
  const stale = isStale(machine, now, staleSeconds);
  const classes = [stale && 'stale', machine.incidents > 0 && 'has-incidents'].filter(Boolean).join(' ');
  return el(
    'tr',
    { class: classes || undefined, 'data-machine': machine.machine_id },
    el('th', { scope: 'row' }, el('a', { href: viewHref('tasks', { machine: machine.machine_id }) }, machine.machine_id)),
    el('td', { class: 'num' }, machine.acked_seq, ' ', el('span', { class: 'hash', title: machine.head_hash ?? '' }, shortHash(machine.head_hash))),
    el('td', { class: 'num' }, el('time', { datetime: pushed?.toISOString(), title: absoluteTime(pushed) }, relativeTime(pushed, now)), stale && el('span', { class: 'badge stale-badge' }, 'stale')),
    el('td', { class: 'num' }, machine.running),
    el('td', { class: 'num' }, machine.tasks),
    el(
      'td',
      { class: 'num' },
      machine.incidents > 0 ? el('a', { href: viewHref('incidents', { machine: machine.machine_id }), class: 'badge incident-badge' }, machine.incidents) : 0,
    ),
  );
}
