import type { Incident } from '../../protocol/fleet-api.js';
import { el } from '../dom.js';
import { absoluteTime, toDate } from '../format.js';
import { viewHref } from '../url-state.js';
import type { View, ViewContext } from './view.js';

const PAGE_SIZE = 100;

/** Refused batches and forks, newest first, of the fleet or of `?machine=`. */
export async function incidentsView({ api, params }: ViewContext): Promise<View> {
  const machine = params.get('machine');
  const query = new URLSearchParams({ limit: String(PAGE_SIZE), ...(machine && { machine }) });
  const body = el('tbody');
  const summary = el('p', { class: 'summary', 'aria-live': 'polite' });
  const more = el('button', { type: 'button', class: 'more' }, 'Load more incidents');
  let cursor: string | null = null;

  const load = async () => {
    const page = await api.incidents(cursor ? new URLSearchParams({ ...Object.fromEntries(query), cursor }) : query);
    cursor = page.next_cursor;
    body.append(...page.incidents.map(incidentRow));
    const count = body.rows.length;
    summary.textContent = count === 0 ? 'No refused batch or fork recorded.' : `${count} incident${count === 1 ? '' : 's'} shown${cursor ? ', more below' : ''}`;
    more.hidden = cursor === null;
  };
  await load();
  more.addEventListener('click', () => void load());

  return {
    title: 'Incidents',
    element: el(
      'section',
      { 'aria-labelledby': 'incidents-heading' },
      el('h1', { id: 'incidents-heading' }, machine ? `Incidents of ${machine}` : 'Incidents'),
      el('p', { class: 'help' }, 'Batches the endpoint refused because they did not continue the machine\'s stored chain: a gap, a fork (a different record at a stored seq) or an altered record.'),
      summary,
      el(
        'div',
        { class: 'table-scroll' },
        el(
          'table',
          { class: 'incidents' },
          el('thead', {}, el('tr', {}, ...['When', 'Machine', 'Seq', 'Reason', 'Detail'].map((label) => el('th', { scope: 'col' }, label)))),
          body,
        ),
      ),
      more,
    ),
  };
}

function incidentRow(incident: Incident): HTMLTableRowElement {
  return el(
    'tr',
    { 'data-reason': incident.reason },
    el('td', {}, absoluteTime(toDate(incident.at))),
    el('td', {}, el('a', { href: viewHref('tasks', { machine: incident.machine_id }) }, incident.machine_id)),
    el('td', { class: 'num' }, incident.seq),
    el('td', {}, el('span', { class: 'status status-failed' }, incident.reason)),
    el('td', {}, incident.detail),
  );
}
