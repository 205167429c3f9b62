import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sha256Hex } from '../node/sha256.js';
import type { DataFileContent } from '../protocol/data-file-v2.js';
import { contentOfText } from './data-file-reading.js';
import type { EventParams, StatusResult } from '../protocol/methods.js';
import type { TamperDetectedRecord, TaskCreatedRecord } from '../protocol/records.js';
import type { TaskView } from '../protocol/task-view.js';
import { verifyDataFileOnDisk } from '../node/verify-files.js';
import { openRawSocket, startDaemon, type Daemon, type RawSocket } from './daemon-harness.js';
import { spawnTracked, tempDir, waitFor } from './processes.js';

/**
 * A running daemon and its data file: foreign edits are noticed within 2 s, kept as evidence and
 * answered with a `tamper_detected` record; a deleted file is rewritten; tasks left running by a
 * killed daemon are still running, and completable, after a restart.
 */

const EVIDENCE_PREFIX = 'task_history.json.tampered-';

/** Runs a command as a separate process (the "someone else" editing the file) and waits for it. */
async function runForeign(command: string, args: string[]): Promise<void> {
  const child = spawnTracked(command, args);
  expect(await child.exited, `${command} ${args.join(' ')}: ${child.stderr()}`).toEqual({ code: 0, signal: null });
}

async function status(raw: RawSocket): Promise<StatusResult> {
  return raw.call('status', {});
}

/** A daemon that checkpoints quickly, holding two tasks with a few steps, checkpointed to the file. */
async function daemonWithCheckpointedHistory(): Promise<{ daemon: Daemon; raw: RawSocket }> {
  const daemon = await startDaemon({ args: ['--checkpoint-idle-ms', '100'] });
  const raw = await openRawSocket(daemon.socketPath);
  const first = await raw.call('create_task', { description: 'rotate the logs', mode: 'autonomous', steps: ['compress', 'upload'] });
  const second = await raw.call('create_task', { description: 'renew the certificate', mode: 'approve-once', steps: ['request'] });
  await raw.call('log_step', { task_id: first.task_id, step_num: 1, command: 'gzip app.log', status: 'success', output: 'compressed four files' });
  await raw.call('log_step', { task_id: second.task_id, step_num: 1, command: 'certbot renew', status: 'failed', error: 'rate limited', recovery: 'waited an hour' });
  await raw.call('log_step', { task_id: first.task_id, step_num: 2, command: 'aws s3 cp', status: 'success', output: 'uploaded' });
  await raw.call('complete_task', { task_id: first.task_id, final_status: 'completed' });
  await waitFor(async () => {
    const s = await status(raw);
    return s.checkpoint_seq === s.last_seq;
  }, 10_000, 'the checkpoint to cover every record');
  return { daemon, raw };
}

/** The next `event` notification of the given record type on a subscribed socket. */
async function nextEvent(raw: RawSocket, type: string): Promise<EventParams> {
  for (;;) {
    const message = await raw.next();
    if (message.method === 'event' && message.params.type === type) return message.params as EventParams;
  }
}

/**
 * The data file's text once its head is `seq`, else null. The file is missing for a moment after a
 * foreign version was moved aside as evidence, until the daemon has written it again.
 */
function dataFileTextAt(dataFile: string, seq: number): string | null {
  if (!existsSync(dataFile)) return null;
  const text = readFileSync(dataFile, 'utf8');
  return contentOfText(text).head.seq === seq ? text : null;
}

function evidenceFiles(dataDir: string): string[] {
  return readdirSync(dataDir).filter((name) => name.startsWith(EVIDENCE_PREFIX)).map((name) => join(dataDir, name));
}

/** Changes one character of a string value in the file text, at the value's first letter. */
function changeOneCharacter(text: string, quotedValue: string, from: number): string {
  const at = text.indexOf(quotedValue, from);
  expect(at, `${quotedValue} in the data file`).toBeGreaterThan(-1);
  const offset = at + 1;
  return text.slice(0, offset) + (text[offset] === 'x' ? 'y' : 'x') + text.slice(offset + 1);
}

describe('foreign edits of the data file while the daemon runs', () => {
  const edits = [
    {
      name: 'a task description inside its record, overwritten in place',
      target: (doc: DataFileContent) => {
        const record = doc.records.find((r) => r.type === 'task_created' && r.description === 'renew the certificate') as TaskCreatedRecord;
        return { seq: record.seq, quoted: '"renew the certificate"', region: '"entries":' };
      },
      write: (foreignFile: string, dataFile: string) => runForeign('cp', [foreignFile, dataFile]),
    },
    {
      name: 'a step error in the tasks view, replaced by rename as an editor saves',
      target: (doc: DataFileContent) => {
        const step = doc.tasks.flatMap((t) => t.steps).find((s) => s.error === 'rate limited');
        return { seq: step?.seq as number, quoted: '"rate limited"', region: '"tasks":' };
      },
      write: async (foreignFile: string, dataFile: string) => {
        const beside = `${dataFile}.editor-swap`;
        await runForeign('cp', [foreignFile, beside]);
        await runForeign('mv', [beside, dataFile]);
      },
    },
  ];

  for (const edit of edits) {
    it(`notices ${edit.name} within 2 s, keeps the evidence, records tamper_detected and rewrites the file`, async () => {
      const { daemon, raw } = await daemonWithCheckpointedHistory();
      const tail = await openRawSocket(daemon.socketPath);
      await tail.call('subscribe', {});

      const original = readFileSync(daemon.dataFile, 'utf8');
      const doc = contentOfText(original);
      const { seq: editedSeq, quoted, region } = edit.target(doc);
      const foreign = changeOneCharacter(original, quoted, original.indexOf(region));
      const foreignFile = join(tempDir('taskhistory-foreign-'), 'edited.json');
      writeFileSync(foreignFile, foreign);
      const before = await status(raw);

      await edit.write(foreignFile, daemon.dataFile);
      const noticed = await waitFor(async () => {
        const now = await status(raw);
        return now.tamper.count === 1 && evidenceFiles(daemon.dataDir).length === 1 ? now : null;
      }, 2000, 'the daemon to notice the foreign edit');

      const [evidence] = evidenceFiles(daemon.dataDir);
      expect(readFileSync(evidence, 'utf8')).toBe(foreign);
      expect(noticed.tamper.last).toMatchObject({ seq: before.last_seq + 1, evidence_file: evidence });

      const event = await nextEvent(tail, 'tamper_detected');
      const record = event.record as TamperDetectedRecord;
      expect(event.seq).toBe(before.last_seq + 1);
      expect(record).toMatchObject({ data_file: daemon.dataFile, evidence_file: evidence, evidence_sha256: sha256Hex(foreign), first_bad_seq: editedSeq });
      expect(record.reason).toContain('changed content');

      // The good file is back, with the tamper record on top of the daemon's own chain.
      const rewritten = await waitFor(() => dataFileTextAt(daemon.dataFile, event.seq), 10_000, 'the data file to be rewritten');
      expect(verifyDataFileOnDisk(daemon.dataFile)).toMatchObject({ ok: true, head: { seq: event.seq, hash: event.hash } });
      const rewrittenDoc = contentOfText(rewritten);
      expect(rewrittenDoc.records.slice(0, -1)).toEqual(doc.records);
      expect(rewrittenDoc.tasks).toEqual(doc.tasks);
      expect(await raw.call('verify', {})).toMatchObject({ ok: true, head: { seq: event.seq } });

      expect(verifyDataFileOnDisk(evidence)).toMatchObject({ ok: false, first_bad_seq: editedSeq, reason: 'changed content' });
      tail.close();
      raw.close();
    });
  }

  it('rewrites a deleted data file and records tamper_detected', async () => {
    const { daemon, raw } = await daemonWithCheckpointedHistory();
    const tail = await openRawSocket(daemon.socketPath);
    await tail.call('subscribe', {});
    const before = contentOfText(readFileSync(daemon.dataFile, 'utf8'));

    await runForeign('rm', [daemon.dataFile]);
    const event = await nextEvent(tail, 'tamper_detected');
    expect(event.seq).toBe(before.head.seq + 1);
    expect(event.record).toMatchObject({ reason: 'data file deleted', data_file: daemon.dataFile });
    expect((event.record as TamperDetectedRecord).evidence_file).toBeUndefined();

    const restoredText = await waitFor(() => dataFileTextAt(daemon.dataFile, event.seq), 10_000, 'the data file to be written again');
    const restored = contentOfText(restoredText);
    expect(restored.records.slice(0, -1)).toEqual(before.records);
    expect(restored.tasks).toEqual(before.tasks);
    expect(verifyDataFileOnDisk(daemon.dataFile)).toMatchObject({ ok: true, head: { seq: event.seq } });
    expect(evidenceFiles(daemon.dataDir)).toEqual([]);
    expect((await status(raw)).tamper).toMatchObject({ count: 1, last: { seq: event.seq, reason: 'data file deleted' } });
    tail.close();
    raw.close();
  });
});

describe('tasks left running by a killed daemon', () => {
  it('stay running after a restart, are listed with their age, and can still be completed', async () => {
    const daemon = await startDaemon();
    const raw = await openRawSocket(daemon.socketPath);
    const deploy = await raw.call('create_task', { description: 'deploy the api', mode: 'autonomous', steps: ['build', 'ship'], agent: 'deployer' });
    const backup = await raw.call('create_task', { description: 'back up the database', mode: 'step-by-step', steps: ['dump'] });
    await raw.call('log_step', { task_id: deploy.task_id, step_num: 1, command: 'docker build .', status: 'success' });
    raw.close();
    expect(await daemon.stop('SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });

    const restarted = await startDaemon({ dataDir: daemon.dataDir, socketPath: daemon.socketPath });
    const again = await openRawSocket(restarted.socketPath);
    const askedAt = Date.now() / 1000;
    const after = await status(again);
    expect(after.running_tasks).toBe(2);
    expect(after.running.map(({ age_s: _age, ...task }) => task)).toEqual([
      { task_id: deploy.task_id, description: 'deploy the api', agent: 'deployer', steps: 1 },
      { task_id: backup.task_id, description: 'back up the database', steps: 0 },
    ]);
    // The age counts from creation, across the restart (rounded to 0.1 s by the daemon).
    const createdAt = new Map(((await again.call('to_dict', {})).tasks as TaskView[]).map((t) => [t.task_id, t.timestamp]));
    for (const task of after.running) expect(task.age_s).toBeGreaterThanOrEqual(askedAt - (createdAt.get(task.task_id) as number) - 0.05);

    const logged = await again.call('log_step', { task_id: backup.task_id, step_num: 1, command: 'pg_dump', status: 'success' });
    expect(logged.seq).toBe(after.last_seq + 1);
    await again.call('complete_task', { task_id: deploy.task_id, final_status: 'completed' });
    await again.call('complete_task', { task_id: backup.task_id, final_status: 'aborted' });
    expect((await again.call('get_task', { task_id: deploy.task_id })).status).toBe('completed');
    expect((await again.call('get_task', { task_id: backup.task_id })).steps).toHaveLength(1);
    const done = await status(again);
    expect(done).toMatchObject({ running_tasks: 0, running: [], last_seq: after.last_seq + 3 });
    expect(await again.call('verify', {})).toMatchObject({ ok: true });
    again.close();
  });
});
