import type { ChainLink, FleetTaskDetail } from '../../protocol/fleet-api.js';
import type { StepView } from '../../protocol/task-view.js';
import { el, replaceChildren, type Child } from '../dom.js';
import { absoluteTime, duration, toDate } from '../format.js';
import { viewHref } from '../url-state.js';
import type { View, ViewContext } from './view.js';
import { timelineChart } from './timeline-chart.js';

/** Outputs longer than this (characters or lines) start collapsed. */
const COLLAPSE_CHARS = 2_000;
const COLLAPSE_LINES = 20;

const CHAIN_NOTE =
  'Each record carries its seq (gap-free from 1 on its machine) and a SHA-256 hash covering its content and the hash of the record before it. ' +
  'The endpoint stored these records only as an unbroken continuation of the machine\'s chain, so a record changed, removed or reordered after it was pushed ' +
  'would no longer match the hashes after it. The chain proves the order and integrity of what the daemon recorded, not that the agent\'s report is true.';

/** One task with every step, its timeline and its place in the chain. */
export async function taskView({ api, params }: ViewContext): Promise<View> {
  const machineId = params.get('machine') ?? '';
  const taskId = params.get('task') ?? '';
  const element = el('section', { 'aria-labelledby': 'task-heading' });
  const draw = (task: FleetTaskDetail) => replaceChildren(element, ...taskContent(task));
  draw(await api.task(machineId, taskId));
  return {
    title: `Task ${taskId}`,
    element,
    async refresh(event) {
      if (!event || event.machine_id === machineId) draw(await api.task(machineId, taskId));
    },
  };
}

function taskContent(task: FleetTaskDetail): Child[] {
  const linkOfSeq = new Map(task.chain.map((link) => [link.seq, link]));
  const created = toDate(task.timestamp);
  const completed = toDate(task.completed_at);
  return [
    el('p', { class: 'crumbs' }, el('a', { href: viewHref('tasks', { machine: task.machine_id }) }, `← tasks of ${task.machine_id}`)),
    el('h1', { id: 'task-heading' }, task.description || task.task_id),
    el(
      'dl',
      { class: 'facts' },
      ...fact('Task', el('code', {}, task.task_id)),
      ...fact('Status', el('span', { class: `status status-${task.status}`, 'data-task-status': task.status }, task.status)),
      ...fact('Machine', task.machine_id),
      ...fact('Agent', task.agent ?? '—'),
      ...fact('Mode', task.mode),
      ...fact('Created', absoluteTime(created)),
      ...fact('Completed', completed ? absoluteTime(completed) : '—'),
      ...fact('Steps', `${task.steps.length} logged of ${task.planned_steps} planned`),
      ...fact('Chain', `created at seq ${task.seq}`, task.completed_seq !== undefined ? `, completed at seq ${task.completed_seq}` : ''),
    ),
    task.plan.length > 0 && el('h2', {}, 'Plan'),
    task.plan.length > 0 && el('ol', { class: 'plan' }, ...task.plan.map((item) => el('li', {}, typeof item === 'string' ? item : JSON.stringify(item)))),
    task.steps.length > 0 && el('h2', {}, 'Timeline'),
    task.steps.length > 0 && el('figure', { class: 'timeline-figure' }, timelineChart(task.steps)),
    el('h2', {}, 'Steps'),
    task.steps.length === 0 ? el('p', {}, 'No step logged yet.') : el('ol', { class: 'steps' }, ...task.steps.map((step) => stepItem(step, linkOfSeq.get(step.seq)))),
    el('aside', { class: 'chain-note' }, el('h2', {}, 'What the chain proves'), el('p', {}, CHAIN_NOTE), chainTable(task.chain)),
  ];
}

const RECORD_LABELS: Record<ChainLink['type'], string> = { task_created: 'created', step_logged: 'step', task_completed: 'completed' };

/** Every record the task is built from, with its seq, hash and the hash it links to. */
function chainTable(chain: ChainLink[]): HTMLTableElement {
  return el(
    'table',
    { class: 'chain' },
    el('caption', {}, 'The records of this task in its machine\'s chain'),
    el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'Record'), el('th', { scope: 'col' }, 'Seq'), el('th', { scope: 'col' }, 'Hash'), el('th', { scope: 'col' }, 'Previous hash'))),
    el(
      'tbody',
      {},
      ...chain.map((link) =>
        el(
          'tr',
          { 'data-seq': link.seq },
          el('th', { scope: 'row' }, RECORD_LABELS[link.type]),
          el('td', { class: 'num' }, link.seq),
          el('td', {}, hashText(link.hash)),
          el('td', {}, hashText(link.prev_hash)),
        ),
      ),
    ),
  );
}

/** A hash shortened on screen by CSS only: the text holds the full value, so selecting it copies all of it. */
function hashText(hash: string): HTMLElement {
  return el('code', { class: 'hash hash-short', title: hash, 'data-field': 'hash' }, hash);
}

function fact(term: string, ...value: Child[]): HTMLElement[] {
  return [el('dt', {}, term), el('dd', {}, ...value)];
}

function stepItem(step: StepView, link: ChainLink | undefined): HTMLLIElement {
  const started = toDate(step.started_at);
  return el(
    'li',
    { class: `step status-${step.status}`, 'data-step': step.step },
    el('h3', {}, `Step ${step.step} `, el('span', { class: `status status-${step.status}` }, step.status)),
    el('pre', { class: 'command' }, el('code', {}, step.command)),
    el(
      'dl',
      { class: 'facts step-facts' },
      ...fact('Exit code', el('span', { 'data-field': 'exit_code' }, step.exit_code ?? '—')),
      ...fact('Duration', el('span', { 'data-field': 'duration' }, duration(step.duration_ms))),
      ...fact('Started', absoluteTime(started)),
      ...fact('Logged', absoluteTime(toDate(step.timestamp))),
      ...fact('Seq', el('span', { 'data-field': 'seq' }, step.seq)),
      ...fact('Hash', link ? hashText(link.hash) : '—'),
    ),
    largeField('Output', step.output),
    largeField('Error', step.error),
    largeField('Recovery', step.recovery),
  );
}

/** A large text field in a monospace block; collapsed when long, expandable with the keyboard. */
function largeField(label: string, text: string | undefined): HTMLElement | null {
  if (text === undefined) return null;
  const block = el('pre', { class: `large-field field-${label.toLowerCase()}` }, text);
  const long = text.length > COLLAPSE_CHARS || text.split('\n').length > COLLAPSE_LINES;
  if (!long) return el('div', { class: 'field-block' }, el('h4', {}, label), block);
  return el('details', { class: 'field-block' }, el('summary', {}, `${label} (${text.length.toLocaleString('en')} characters, collapsed)`), block);
}
