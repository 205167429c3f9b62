import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, release } from 'node:os';
import { dirname } from 'node:path';
import { PEER_KINDS, type PeerKind } from './peers/store.js';

/**
 * The results table: one row per measured figure, ours beside every peer with the ratio ours/peer,
 * and the target with pass or fail where there is one.
 */
interface Bounds {
  atLeast?: number;
  atMost?: number;
}

export interface Target extends Bounds {
  /** Bounds on ours/peer, the peer measured in the same run (speed is judged by ratios, never by absolute times). */
  against?: RatioTarget[];
}

export interface RatioTarget extends Bounds {
  peer: PeerName;
}

export interface Row {
  scenario: string;
  metric: string;
  /** null: could not be measured (the reason is in the notes). */
  ours: number | null;
  peers?: Partial<Record<PeerName, number | null>>;
  target?: Target;
}

/** Every column beside ours: the floor first, then the stores. */
export type PeerName = 'floor' | PeerKind;
const PEER_COLUMNS: readonly PeerName[] = ['floor', ...PEER_KINDS];
const PEER_TITLES: Record<PeerName, string> = {
  floor: 'floor: bare socket + fdatasync',
  sqlite: 'SQLite WAL FULL',
  'json-fsync': 'JSON rewrite + fsync',
  'json-nofsync': 'JSON rewrite, no fsync',
};

function within(value: number, bounds: Bounds): boolean {
  return (bounds.atLeast === undefined || value >= bounds.atLeast) && (bounds.atMost === undefined || value <= bounds.atMost);
}

/** The peers a row's ratio bounds name that were not measured (a ratio against them cannot pass). */
function unmeasuredPeers(row: Row): PeerName[] {
  return (row.target?.against ?? []).map((bound) => bound.peer).filter((peer) => !row.peers?.[peer]);
}

/** Whether the row meets its target: its own bounds, and every ratio bound against a measured peer. */
function meetsTarget(row: Row): boolean {
  const { ours, target } = row;
  if (!target) return true;
  if (ours === null || Number.isNaN(ours) || !within(ours, target) || unmeasuredPeers(row).length) return false;
  return (target.against ?? []).every((bound) => within(ours / (row.peers?.[bound.peer] as number), bound));
}

function formatNumber(value: number | null | undefined): string {
  if (value === null || value === undefined || Number.isNaN(value)) return 'n/a';
  if (Math.abs(value) >= 100) return Math.round(value).toLocaleString('en-US');
  if (Math.abs(value) >= 10) return value.toFixed(1);
  return value.toFixed(value === 0 ? 0 : 2);
}

function formatRatio(ours: number | null, peer: number | null | undefined): string {
  if (ours === null || peer === null || peer === undefined || peer === 0 || Number.isNaN(ours) || Number.isNaN(peer)) return 'n/a';
  const ratio = ours / peer;
  if (ratio >= 10) return `${ratio.toFixed(0)}x`;
  return ratio >= 0.1 ? `${ratio.toFixed(2)}x` : `${ratio.toPrecision(2)}x`;
}

const SHORT_PEER_NAMES: Record<PeerName, string> = { floor: 'floor', sqlite: 'SQLite', 'json-fsync': 'JSON+fsync', 'json-nofsync': 'JSON' };

function formatBounds(bounds: Bounds, unit = ''): string[] {
  return [
    ...(bounds.atLeast !== undefined ? [`>= ${formatNumber(bounds.atLeast)}${unit}`] : []),
    ...(bounds.atMost !== undefined ? [`<= ${formatNumber(bounds.atMost)}${unit}`] : []),
  ];
}

function formatTarget(target: Target | undefined): string {
  if (!target) return '';
  const ratios = (target.against ?? []).flatMap((bound) => formatBounds(bound, `x ${SHORT_PEER_NAMES[bound.peer]}`));
  return [...formatBounds(target), ...ratios].join(', ');
}

function verdict(row: Row): string {
  if (!row.target) return '';
  if (row.ours === null || Number.isNaN(row.ours)) return '**not measured**';
  const unmeasured = unmeasuredPeers(row);
  if (unmeasured.length) return `**not measured** (${unmeasured.map((peer) => SHORT_PEER_NAMES[peer]).join(', ')})`;
  return meetsTarget(row) ? 'pass' : '**FAIL**';
}

export function renderTable(rows: Row[]): string {
  const peers = PEER_COLUMNS.filter((kind) => rows.some((row) => row.peers && kind in row.peers));
  const header = ['Scenario', 'Metric', 'ours', ...peers.flatMap((kind) => [PEER_TITLES[kind], 'ours/peer']), 'Target', 'Result'];
  const lines = [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`];
  for (const row of rows) {
    const peerCells = peers.flatMap((kind) =>
      row.peers && kind in row.peers ? [formatNumber(row.peers[kind]), formatRatio(row.ours, row.peers[kind])] : ['', ''],
    );
    const cells = [row.scenario, row.metric, formatNumber(row.ours), ...peerCells, formatTarget(row.target), verdict(row)];
    lines.push(`| ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

export function environmentLine(startedAt: Date, elapsedS: number): string {
  const model = cpus()[0]?.model.trim() ?? 'unknown CPU';
  return (
    `${availableParallelism()} CPUs (${model}), Node ${process.version}, Linux ${release()}, ` +
    `${startedAt.toISOString().slice(0, 16).replace('T', ' ')} UTC, whole run ${elapsedS.toFixed(0)} s`
  );
}

export function renderReport(rows: Row[], notes: string[], environment: string): string {
  const missed = rows.filter((row) => row.target && !meetsTarget(row));
  const summary = rows.some((row) => row.target)
    ? `Targets: ${rows.filter((row) => row.target).length - missed.length} met, ${missed.length} missed.`
    : '';
  return [
    '# taskhistory benchmark',
    '',
    environment,
    '',
    renderTable(rows),
    '',
    summary,
    '',
    ...notes.map((note) => `- ${note}`),
    '',
  ].join('\n');
}

/** Replaces the results file atomically, so an interrupted run never leaves half a table. */
export function writeResults(file: string, text: string): void {
  mkdirSync(dirname(file), { recursive: true });
  const temp = `${file}.${process.pid}.tmp`;
  writeFileSync(temp, text);
  renameSync(temp, file);
}
