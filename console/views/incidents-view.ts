import type { Incident } from '../api.js';
import { el } from '../dom.js';
import { absoluteTime, toDate } from '../format.js';
import type { View, ViewContext } from './view.js';

/** Fields every incident has, shown in their own columns; any other fields are listed as details. */
const SHOWN = new Set(['machine_id', 'seq', 'reason', 'at']);

/** Refused batches and forks, per machine, newest first (the API's order). */
export async function incidentsView({ api, params }: ViewContext): Promise<View> {
  const machine = params.get('machine');
  const filters = new URLSearchParams(machine ? { machine } : {});
  const body = el('tbody');
  const draw = (incidents: Incident[]) => body.replaceChildren(...incidents.map(incidentRow));
  const incidents = await api.incidents(filters);
  draw(incidents);
  return {
    title: 'Incidents',
    element: el(
      'section',
      { 'aria-labelledby': 'incidents-heading' },
      el('h1', { id: 'incidents-heading' }, machine ? `Incidents of ${machine}` : 'Incidents'),
      el('p', { class: 'summary' }, incidents.length === 0 ? 'No refused batch or fork recorded.' : `${incidents.length} incident${incidents.length === 1 ? '' : 's'}`),
      el(
        'div',
        { class: 'table-scroll' },
        el(
          'table',
          { class: 'incidents' },
          el('thead', {}, el('tr', {}, ...['When', 'Machine', 'Seq', 'Reason', 'Details'].map((label) => el('th', { scope: 'col' }, label)))),
          body,
        ),
      ),
    ),
    async onStored(event) {
      if (!machine || event.machine_id === machine) draw(await api.incidents(filters));
    },
  };
}

function incidentRow(incident: Incident): HTMLTableRowElement {
  const details = Object.entries(incident).filter(([key]) => !SHOWN.has(key));
  return el(
    'tr',
    {},
    el('td', {}, absoluteTime(toDate(incident.at))),
    el('td', {}, incident.machine_id),
    el('td', { class: 'num' }, incident.seq ?? '—'),
    el('td', {}, incident.reason),
    el('td', {}, ...details.map(([key, value]) => el('div', {}, el('span', { class: 'detail-key' }, `${key}: `), typeof value === 'string' ? value : JSON.stringify(value)))),
  );
}
