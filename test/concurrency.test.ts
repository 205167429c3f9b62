import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { isJournalSegmentName } from '../protocol/data-file.js';
import { readDataFileContent } from './data-file-reading.js';
import { GENESIS_HASH } from '../protocol/records.js';
import { verifyDataFileOnDisk } from '../node/verify-files.js';
import { openRawSocket, startDaemon, type RawSocket } from './daemon-harness.js';
import { waitFor } from './processes.js';

/**
 * Many writers at once: group commit must acknowledge nothing it loses, and keep seqs gap-free,
 * whether a group syncs on the main thread or in the thread pool (both happen with this many writers).
 */

const CLIENTS = 48;
const STEPS_PER_TASK = 12;

interface Acknowledged {
  taskId: string;
  createdSeq: number;
  stepSeqs: number[];
  completedSeq: number;
}

/** One agent: creates its task, logs its steps one after another, completes it. */
async function runAgent(client: RawSocket, index: number): Promise<Acknowledged> {
  const created = await client.call('create_task', { description: `agent ${index}`, mode: 'autonomous', steps: Array.from({ length: STEPS_PER_TASK }, (_, i) => `step ${i + 1}`) });
  const stepSeqs: number[] = [];
  for (let step = 1; step <= STEPS_PER_TASK; step++) {
    const { seq } = await client.call('log_step', { task_id: created.task_id, step_num: step, command: `agent ${index} step ${step}`, status: 'success', output: `out ${index}.${step}` });
    stepSeqs.push(seq);
  }
  const completed = await client.call('complete_task', { task_id: created.task_id, final_status: 'completed' });
  return { taskId: created.task_id, createdSeq: created.seq, stepSeqs, completedSeq: completed.seq };
}

/** Collects the params of every event notification a connection receives from now on. */
function collectEvents(socket: RawSocket): any[] {
  const events: any[] = [];
  socket.ws.on('message', (data) => {
    const message = JSON.parse(data.toString());
    if (message.method === 'event') events.push(message.params);
  });
  return events;
}

describe('concurrent clients', () => {
  it(`${CLIENTS} WebSocket clients writing at once: every acknowledged record is kept, seqs gap-free, events in commit order`, async () => {
    const daemon = await startDaemon();
    const watcherAll = await openRawSocket(daemon.socketPath);
    const watcherOne = await openRawSocket(daemon.socketPath);
    await watcherAll.call('subscribe');
    const allEvents = collectEvents(watcherAll);
    const oneEvents = collectEvents(watcherOne);
    const clients = await Promise.all(Array.from({ length: CLIENTS }, () => openRawSocket(daemon.socketPath)));

    // The filtered subscriber watches agent 0's task, so agent 0 starts first.
    const first = await clients[0].call('create_task', { description: 'agent 0', mode: 'autonomous', steps: [] });
    await watcherOne.call('subscribe', { task_id: first.task_id });
    const agent0Steps = (async () => {
      const seqs: number[] = [];
      for (let step = 1; step <= STEPS_PER_TASK; step++) seqs.push((await clients[0].call('log_step', { task_id: first.task_id, step_num: step, command: `agent 0 step ${step}`, status: 'failed', error: `e${step}` })).seq);
      return seqs;
    })();
    const results = await Promise.all(clients.slice(1).map((client, i) => runAgent(client, i + 1)));
    const agent0 = { taskId: first.task_id, createdSeq: first.seq, stepSeqs: await agent0Steps, completedSeq: (await clients[0].call('complete_task', { task_id: first.task_id, final_status: 'failed' })).seq };
    const acknowledged = [agent0, ...results];

    const total = CLIENTS * (STEPS_PER_TASK + 2);
    const ackedSeqs = acknowledged.flatMap((a) => [a.createdSeq, ...a.stepSeqs, a.completedSeq]).sort((a, b) => a - b);
    expect(ackedSeqs).toEqual(Array.from({ length: total }, (_, i) => i + 1));
    for (const agent of acknowledged) {
      const seqs = [agent.createdSeq, ...agent.stepSeqs, agent.completedSeq];
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b)); // each agent's calls commit in the order it made them
    }

    // In to_dict: every task with every step, each under the seq it was acknowledged with.
    const dict = await clients[0].call('to_dict');
    expect(dict.count).toBe(CLIENTS);
    const byId = new Map(dict.tasks.map((task: any) => [task.task_id, task]));
    for (const agent of acknowledged) {
      const task: any = byId.get(agent.taskId);
      expect(task.seq).toBe(agent.createdSeq);
      expect(task.steps.map((s: { seq: number }) => s.seq)).toEqual(agent.stepSeqs);
      expect(task.steps.map((s: { step: number }) => s.step)).toEqual(Array.from({ length: STEPS_PER_TASK }, (_, i) => i + 1));
      expect(task.status).toBe(agent === agent0 ? 'failed' : 'completed');
    }

    // Events: every record once, in commit order, each linking to the one before.
    await waitFor(() => allEvents.length >= total, 20_000, 'every event');
    expect(allEvents.map((e) => e.seq)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
    expect(allEvents[0].record.prev_hash).toBe(GENESIS_HASH);
    for (let i = 1; i < allEvents.length; i++) expect(allEvents[i].record.prev_hash).toBe(allEvents[i - 1].hash);
    await waitFor(() => oneEvents.length >= STEPS_PER_TASK + 1, 20_000, "agent 0's events");
    expect(oneEvents.map((e) => e.seq)).toEqual([...agent0.stepSeqs, agent0.completedSeq]);
    expect(new Set(oneEvents.map((e) => e.task_id))).toEqual(new Set([agent0.taskId]));

    expect(await clients[0].call('verify')).toMatchObject({ ok: true, head: { seq: total } });
    for (const socket of [watcherAll, watcherOne, ...clients]) socket.close();

    // After SIGTERM the file alone holds it all, and verifies.
    expect(await daemon.stop()).toEqual({ code: 0, signal: null });
    const file = readDataFileContent(daemon.dataFile);
    expect(file.tasks).toEqual(dict.tasks);
    expect(file.count).toBe(CLIENTS);
    expect(file.anchor).toEqual({ seq: 0, hash: GENESIS_HASH });
    expect(file.stubs).toEqual([]);
    expect(file.records.map((r) => r.seq)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
    expect(file.head.seq).toBe(total);
    expect(readdirSync(daemon.dataDir).filter(isJournalSegmentName)).toEqual([]); // the last checkpoint covers the journal
    expect(verifyDataFileOnDisk(daemon.dataFile)).toMatchObject({ ok: true, head: file.head });
  });
});
