import { chainRecord, GENESIS_HASH, type ChainPoint, type ChainRecord, type RecordStub, type UnchainedRecord, type Writer } from '../protocol/records.js';
import type { DataFileContent } from '../protocol/data-file-v2.js';
import { tasksFromRecords } from '../protocol/task-view.js';
import { sha256Hex } from '../node/sha256.js';

/**
 * Builds real chains in memory (chainRecord with Node's SHA-256), and the content of a data file
 * that keeps some of their tasks: what the daemon's state holds, without a daemon.
 */
export class ChainFixture {
  readonly records: ChainRecord[] = [];
  private head: ChainPoint = { seq: 0, hash: GENESIS_HASH };

  add(body: UnchainedRecord): ChainRecord {
    const record = chainRecord(structuredClone(body), this.head.seq, this.head.hash, sha256Hex);
    this.records.push(record);
    this.head = { seq: record.seq, hash: record.hash };
    return record;
  }

  createTask(taskId: string, extra: { agent?: string; writer?: Writer } = {}): ChainRecord {
    return this.add({ type: 'task_created', ts: 1_700_000_000 + this.head.seq / 8, task_id: taskId, description: `work on ${taskId}`, mode: 'autonomous', plan: [{ cmd: 'ls' }], machine_id: 'm-1', ...extra });
  }

  logStep(taskId: string, step: number, fields: { output?: string; error?: string; recovery?: string; exit_code?: number; writer?: Writer } = {}): ChainRecord {
    return this.add({ type: 'step_logged', ts: 1_700_000_000.5 + this.head.seq / 8, task_id: taskId, step, command: `cmd ${step} "quoted" \\ ✓`, status: fields.error ? 'failed' : 'success', started_at: 1_700_000_000.25, duration_ms: 12, ...fields });
  }

  complete(taskId: string): ChainRecord {
    return this.add({ type: 'task_completed', ts: 1_700_000_001 + this.head.seq / 8, task_id: taskId, final_status: 'completed' });
  }

  /** Shortens a stored output the way redaction does: the digest stays, `elided` says so. */
  elideOutput(record: ChainRecord, keep: number): void {
    if (record.type !== 'step_logged' || record.output === undefined) throw new Error('elideOutput needs a step with output');
    record.elided = { output: { state: 'truncated', length: Buffer.byteLength(record.output) } };
    record.output = record.output.slice(0, keep);
  }

  /**
   * The file content that keeps every record except those of `trimmed` tasks: those before the
   * oldest kept record move into the anchor, later ones become stubs (as the daemon trims). With
   * `upToSeq`, the file holds the records up to it (the rest would be in the journal).
   */
  content(trimmed: ReadonlySet<string> = new Set(), maxTasks = 100, upToSeq = this.head.seq): DataFileContent {
    const all = this.records.slice(0, upToSeq);
    const isTrimmed = (r: ChainRecord) => r.type !== 'tamper_detected' && trimmed.has(r.task_id);
    const firstKept = all.findIndex((r) => !isTrimmed(r));
    const start = firstKept === -1 ? all.length : firstKept;
    const anchor = start === 0 ? { seq: 0, hash: GENESIS_HASH } : { seq: all[start - 1].seq, hash: all[start - 1].hash };
    const later = all.slice(start);
    const stubs: RecordStub[] = later.filter(isTrimmed).map((r) => [r.seq, r.hash]);
    const records = later.filter((r) => !isTrimmed(r));
    const head = all.length ? { seq: all[all.length - 1].seq, hash: all[all.length - 1].hash } : { seq: 0, hash: GENESIS_HASH };
    return { machine_id: 'm-1', max_tasks: maxTasks, head, anchor, stubs, records, tasks: [...tasksFromRecords(records).values()] };
  }
}

export const WRITER: Writer = { uid: 1000, gid: 1000, pid: 4242, comm: 'agent', exe: '/usr/bin/python3' };

/** A chain with every kind of record and field: trimmed tasks (anchor and stubs), writers, large fields, an elided output. */
export function variedChain(): { fixture: ChainFixture; trimmed: Set<string> } {
  const f = new ChainFixture();
  f.createTask('t-old');
  f.logStep('t-old', 1, { output: 'old output' });
  f.complete('t-old');
  f.createTask('t-a', { agent: 'claude', writer: WRITER });
  f.createTask('t-gone');
  f.logStep('t-a', 1, { output: 'line 1\nline 2 ünïcödé 🚀', exit_code: 0, writer: WRITER });
  f.logStep('t-gone', 1, { output: 'gone' });
  f.logStep('t-a', 2, { error: 'permission denied', recovery: 'retried with sudo' });
  f.complete('t-gone');
  f.add({ type: 'tamper_detected', ts: 1_700_000_100, reason: 'changed content', data_file: '/var/lib/taskhistory/task_history.json', first_bad_seq: 3 });
  f.elideOutput(f.logStep('t-a', 3, { output: 'x'.repeat(300) }), 40);
  f.complete('t-a');
  f.createTask('t-empty');
  f.createTask('t-run');
  f.logStep('t-run', 1, {});
  return { fixture: f, trimmed: new Set(['t-old', 't-gone']) };
}
