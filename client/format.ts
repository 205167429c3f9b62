import type { VerifyReport } from '../protocol/chain-verify.js';
import type { RedactionRuleInfo, StatusResult } from '../protocol/methods.js';
import type { ChainRecord, RecordType, Writer } from '../protocol/records.js';
import type { StepView, TaskView } from '../protocol/task-view.js';
import { visibleBlock, visibleLine as line } from './visible-text.js';

/**
 * Readable text for the CLI. Pure functions: each returns the lines to print. Every text that comes
 * from the daemon passes through visibleLine/visibleBlock, so stored control characters show as escapes.
 */

/** Unix seconds as `YYYY-MM-DD HH:MM:SS.mmm` in UTC, so lines from different machines compare. */
export function formatTime(unixSeconds: number): string {
  return new Date(unixSeconds * 1000).toISOString().replace('T', ' ');
}

export function formatAge(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

/** Who wrote a record, as the daemon read it from the kernel: `uid 1000 gid 1000 pid 4242 comm "node" exe /usr/bin/node`. */
export function formatWriter(writer: Writer): string {
  const comm = writer.comm === null ? 'comm unknown' : `comm ${JSON.stringify(writer.comm)}`;
  const exe = writer.exe === null ? 'exe unknown' : `exe ${writer.exe}`;
  return line(`uid ${writer.uid} gid ${writer.gid} pid ${writer.pid} ${comm} ${exe}`);
}

export function formatDuration(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

function labelled(rows: [string, string][]): string[] {
  const width = Math.max(...rows.map(([label]) => label.length));
  return rows.map(([label, value]) => `${label.padEnd(width)}  ${value}`);
}

function indented(text: string, prefix: string): string[] {
  return visibleBlock(text).replace(/\n$/, '').split('\n').map((row) => prefix + row);
}

export function formatStatus(status: StatusResult): string[] {
  const { cloud, tamper } = status;
  const lastTamper = tamper.last
    ? `, last at seq ${tamper.last.seq} (${formatTime(tamper.last.ts)}): ${line(tamper.last.reason)}${tamper.last.evidence_file ? `, evidence ${line(tamper.last.evidence_file)}` : ''}`
    : '';
  const cloudLine =
    cloud.state === 'disabled'
      ? 'disabled'
      : [
          line(`${cloud.state} ${cloud.url ?? ''}`.trim()),
          `queued ${cloud.queued}`,
          `acked seq ${cloud.acked_seq}`,
          `lag ${formatDuration(cloud.lag_ms)}`,
          `last error ${line(cloud.last_error ?? 'none')}`,
          `next retry ${line(cloud.next_retry_at ?? 'none')}`,
          ...(cloud.restore ? [`restore ${line(cloud.restore)}`] : []),
        ].join(', ');
  const lines = labelled([
    ['daemon', `taskhistoryd ${line(status.version)}, pid ${status.pid}, up ${formatAge(status.uptime_s)}`],
    ['machine', line(status.machine_id)],
    ['socket', line(status.socket)],
    ['data file', `${line(status.data_file)} (checkpoint at seq ${status.checkpoint_seq})`],
    ['tasks', `${status.tasks} (max ${status.max_tasks}), ${status.running_tasks} running`],
    ['head', `seq ${status.last_seq}, hash ${status.head_hash}`],
    ['you', `${status.caller.uid === null ? 'no attribution' : `uid ${status.caller.uid}`}, seeing ${status.caller.sees === 'all' ? 'every task' : 'your own tasks'}: ${status.caller.tasks} tasks, ${status.caller.running_tasks} running`],
    ['tamper', tamper.count === 0 ? 'none detected' : `${tamper.count} detected${lastTamper}`],
    ['redaction', status.redaction ? 'on' : 'off'],
    ['cloud', cloudLine],
  ]);
  for (const task of status.running) {
    const agent = task.agent ? ` [${line(task.agent)}]` : '';
    lines.push(`  running ${line(task.task_id)}${agent}: ${task.steps} steps, for ${formatAge(task.age_s)}: ${line(task.description)}`);
  }
  return lines;
}

export function formatTaskLine(task: TaskView): string {
  const steps = `${task.steps.length}/${task.planned_steps} steps`;
  return `${line(task.task_id)}  ${formatTime(task.timestamp)}  ${line(task.status).padEnd(9)}  ${steps.padEnd(11)}  ${line(task.description)}`;
}

/** Step timing as `started …, 12 ms, exit 0`, or '' when the step carries none. */
function stepTiming(step: Pick<StepView, 'started_at' | 'duration_ms' | 'exit_code'>): string {
  const parts: string[] = [];
  if (step.started_at !== undefined) parts.push(`started ${formatTime(step.started_at)}`);
  if (step.duration_ms !== undefined) parts.push(formatDuration(step.duration_ms));
  if (step.exit_code !== undefined) parts.push(`exit ${step.exit_code}`);
  return parts.join(', ');
}

export function formatTask(task: TaskView): string[] {
  const lines = labelled([
    ['task', line(task.task_id)],
    ['status', line(task.status)],
    ['description', line(task.description)],
    ['mode', line(task.mode)],
    ...(task.agent !== undefined ? ([['agent', line(task.agent)]] as [string, string][]) : []),
    ['machine', line(task.machine_id)],
    ['created', `${formatTime(task.timestamp)} (seq ${task.seq})`],
    ...(task.writer !== undefined ? ([['writer', formatWriter(task.writer)]] as [string, string][]) : []),
    ...(task.completed_at !== undefined ? ([['finished', formatTime(task.completed_at)]] as [string, string][]) : []),
    ['planned', `${task.planned_steps} steps`],
  ]);
  // JSON escapes C0 controls but leaves C1 controls and bidi overrides as they are.
  task.plan.forEach((planned, index) => lines.push(`  ${index + 1}. ${line(JSON.stringify(planned))}`));
  lines.push(`steps (${task.steps.length})`);
  for (const step of task.steps) {
    const timing = stepTiming(step);
    lines.push(`  ${step.step}. [${line(step.status)}] ${line(step.command)}`);
    lines.push(`     logged ${formatTime(step.timestamp)} (seq ${step.seq})${timing ? `; ${timing}` : ''}`);
    if (step.writer !== undefined) lines.push(`     by ${formatWriter(step.writer)}`);
    for (const field of ['output', 'error', 'recovery'] as const) {
      const text = step[field];
      if (text === undefined || text === '') continue;
      lines.push(`     ${field}:`, ...indented(text, '       '));
    }
  }
  return lines;
}

/** One line of `tail`: a committed record, or one rebuilt from a task view (whose completion seq is unknown). */
export interface TailEntry {
  seq: number | null;
  ts: number;
  type: RecordType;
  task_id: string | null;
  step?: number;
  status?: string;
  started_at?: number;
  duration_ms?: number;
  exit_code?: number;
  /** The command, description or tamper reason. */
  text?: string;
  writer?: Writer;
}

export function tailEntryFromRecord(record: ChainRecord): TailEntry {
  const base = { seq: record.seq, ts: record.ts, type: record.type, ...(record.writer !== undefined && { writer: record.writer }) };
  switch (record.type) {
    case 'task_created':
      return { ...base, task_id: record.task_id, status: 'running', text: record.description };
    case 'step_logged':
      return {
        ...base,
        task_id: record.task_id,
        step: record.step,
        status: record.status,
        started_at: record.started_at,
        duration_ms: record.duration_ms,
        exit_code: record.exit_code,
        text: record.command,
      };
    case 'task_completed':
      return { ...base, task_id: record.task_id, status: record.final_status };
    case 'tamper_detected':
      return { ...base, task_id: null, text: record.reason + (record.evidence_file ? ` (evidence ${record.evidence_file})` : '') };
  }
}

/** The records a task view shows, oldest first. */
export function tailEntriesFromTask(task: TaskView): TailEntry[] {
  const entries: TailEntry[] = [
    { seq: task.seq, ts: task.timestamp, type: 'task_created', task_id: task.task_id, status: 'running', text: task.description, writer: task.writer },
  ];
  for (const step of task.steps) {
    entries.push({
      seq: step.seq,
      ts: step.timestamp,
      type: 'step_logged',
      task_id: task.task_id,
      step: step.step,
      status: step.status,
      started_at: step.started_at,
      duration_ms: step.duration_ms,
      exit_code: step.exit_code,
      text: step.command,
      writer: step.writer,
    });
  }
  if (task.completed_at !== undefined) {
    entries.push({ seq: task.completed_seq ?? null, ts: task.completed_at, type: 'task_completed', task_id: task.task_id, status: task.status });
  }
  return entries;
}

export function formatTailEntry(entry: TailEntry): string {
  const parts = [
    String(entry.seq ?? '-').padStart(7),
    formatTime(entry.ts),
    entry.type.padEnd(15),
    line(entry.task_id ?? '-'),
  ];
  if (entry.step !== undefined) parts.push(`step ${entry.step}`);
  if (entry.status !== undefined) parts.push(line(entry.status));
  if (entry.duration_ms !== undefined) parts.push(formatDuration(entry.duration_ms));
  if (entry.exit_code !== undefined) parts.push(`exit ${entry.exit_code}`);
  if (entry.writer !== undefined) parts.push(`[uid ${entry.writer.uid} pid ${entry.writer.pid} ${line(entry.writer.comm ?? '?')}]`);
  const head = parts.join('  ');
  return entry.text === undefined ? head : `${head}: ${line(entry.text.split('\n')[0])}`;
}

export function formatVerifyReport(report: VerifyReport): string {
  if (report.ok) return `ok: ${report.checked} records verified, head seq ${report.head?.seq ?? 0}`;
  const where = report.first_bad_seq === null ? '' : ` at seq ${report.first_bad_seq}`;
  return `FAILED${where}: ${line(String(report.reason))}${report.detail ? ` (${line(report.detail)})` : ''}`;
}

export function formatRedactionRules(rules: RedactionRuleInfo[]): string[] {
  const width = Math.max(0, ...rules.map((rule) => rule.name.length));
  return rules.map((rule) => `${line(rule.name).padEnd(width)}  ${rule.source.padEnd(7)}  ${line(rule.description)}`);
}
