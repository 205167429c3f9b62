import { seededRandom } from '../node/seeded-random.js';
import { closeSync, openSync, readdirSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseDataFile } from '../protocol/chain-verify.js';
import { recordsOfDataFile } from '../protocol/data-file-v2.js';
import { sha256Hex } from '../node/sha256.js';
import { sortedJournalSegments } from '../protocol/data-file.js';
import { parseJournal } from '../node/journal-files.js';
import type { ChainRecord } from '../protocol/records.js';
import type { TaskView } from '../protocol/task-view.js';
import { verifyDataFileOnDisk } from '../node/verify-files.js';
import { openRawSocket, startDaemon, type Daemon, type RawSocket } from './daemon-harness.js';
import { sleep, tempDir, waitFor } from './processes.js';

/**
 * kill -9 safety: rounds of 8 WebSocket clients logging as fast as they can, the daemon killed
 * with SIGKILL at a random moment and restarted on the same data dir. After every kill the data
 * dir on its own, and after every restart the daemon, hold every record a client got a seq for,
 * in a gap-free chain that verifies.
 */

const ROUNDS = 20;
const CLIENTS = 8;
const SEED = Number(process.env.TASKHISTORY_CRASH_SEED ?? 20240611);


/** What a client was told was recorded: the seq it got back and what it had sent. */
type Ack =
  | { seq: number; type: 'task_created'; task_id: string; description: string }
  | { seq: number; type: 'step_logged'; task_id: string; step: number; command: string; output: string }
  | { seq: number; type: 'task_completed'; task_id: string; final_status: string };

class ConnectionLost extends Error {}

/** One load client: calls in a row until its connection dies with the daemon. */
class LoadClient {
  readonly closed: Promise<void>;
  inFlight = false;

  constructor(
    private readonly raw: RawSocket,
    private readonly acks: Map<number, Ack>,
    private readonly unexpected: string[],
  ) {
    this.closed = new Promise((resolve) => raw.ws.once('close', () => resolve()));
  }

  /** One request; throws ConnectionLost when the daemon dies before answering. */
  private async call(method: string, params: Record<string, unknown>): Promise<any> {
    const reply = this.raw.call(method, params);
    reply.catch(() => undefined); // after a kill the harness times the orphaned request out; nobody waits for it
    this.inFlight = true;
    try {
      const outcome = await Promise.race([reply, this.closed.then(() => ConnectionLost)]);
      if (outcome === ConnectionLost) throw new ConnectionLost();
      return outcome;
    } catch (error) {
      if (!(error instanceof ConnectionLost) && this.raw.closed === null) this.unexpected.push(`${method}: ${(error as Error).message}`);
      throw new ConnectionLost();
    } finally {
      this.inFlight = false;
    }
  }

  /** Creates tasks, logs steps and completes some, as fast as the daemon answers, until killed. */
  async run(name: string, random: () => number, leftovers: string[]): Promise<void> {
    try {
      for (let n = 0; ; n++) {
        const leftover = leftovers.pop();
        if (leftover) {
          const { seq } = await this.call('complete_task', { task_id: leftover, final_status: 'aborted' });
          this.acks.set(seq, { seq, type: 'task_completed', task_id: leftover, final_status: 'aborted' });
        }
        const description = `${name} task ${n}`;
        const created = await this.call('create_task', { description, mode: 'autonomous', steps: ['a', 'b', 'c'] });
        this.acks.set(created.seq, { seq: created.seq, type: 'task_created', task_id: created.task_id, description });
        const steps = 1 + Math.floor(random() * 5);
        for (let step = 1; step <= steps; step++) {
          const command = `${name} run ${n}.${step}`;
          const output = `${command} `.repeat(12);
          const { seq } = await this.call('log_step', { task_id: created.task_id, step_num: step, command, status: 'success', output });
          this.acks.set(seq, { seq, type: 'step_logged', task_id: created.task_id, step, command, output });
        }
        if (random() < 0.6) {
          const final_status = random() < 0.8 ? 'completed' : 'failed';
          const { seq } = await this.call('complete_task', { task_id: created.task_id, final_status });
          this.acks.set(seq, { seq, type: 'task_completed', task_id: created.task_id, final_status });
        }
      }
    } catch (error) {
      if (!(error instanceof ConnectionLost)) throw error;
    }
  }
}

/** The whole chain as it lies in the data dir: the checkpoint's records, then the journal's newer ones. */
function chainOnDisk(dataDir: string, dataFile: string): ChainRecord[] {
  const doc = parseDataFile(readFileSync(dataFile, 'utf8'));
  const records = recordsOfDataFile(doc, sha256Hex);
  for (const name of sortedJournalSegments(readdirSync(dataDir))) {
    for (const record of parseJournal(readFileSync(join(dataDir, name), 'utf8')).records) {
      if (record.seq > doc.head.seq) records.push(record);
    }
  }
  return records;
}

/** Acks whose record is absent or differs, each as a line naming the seq. */
function missingFromChain(acks: Iterable<Ack>, records: ChainRecord[]): string[] {
  const bySeq = new Map(records.map((r) => [r.seq, r as unknown as Record<string, unknown>]));
  const misses: string[] = [];
  for (const ack of acks) {
    const record = bySeq.get(ack.seq);
    if (!record) misses.push(`seq ${ack.seq} (${ack.type}) is missing`);
    else if (Object.entries(ack).some(([key, value]) => record[key] !== value)) misses.push(`seq ${ack.seq} differs: acked ${JSON.stringify(ack)}, stored ${JSON.stringify(record)}`);
  }
  return misses;
}

/** Acks the daemon's task view does not reflect (to_dict after a restart). */
function missingFromTasks(acks: Iterable<Ack>, tasks: TaskView[]): string[] {
  const byId = new Map(tasks.map((t) => [t.task_id, t]));
  const misses: string[] = [];
  for (const ack of acks) {
    const task = byId.get(ack.task_id);
    const present =
      !!task &&
      (ack.type === 'task_created'
        ? task.seq === ack.seq && task.description === ack.description
        : ack.type === 'step_logged'
          ? task.steps.some((s) => s.seq === ack.seq && s.step === ack.step && s.command === ack.command && s.output === ack.output)
          : task.status === ack.final_status);
    if (!present) misses.push(`seq ${ack.seq} (${ack.type} of ${ack.task_id}) is not in the task view`);
  }
  return misses;
}

function expectGapFree(records: ChainRecord[], what: string): void {
  const gaps = records.map((r, i) => (r.seq === i + 1 ? null : `position ${i} holds seq ${r.seq}`)).filter(Boolean);
  expect(gaps, `${what}: seqs are not 1..${records.length}`).toEqual([]);
}

describe('kill -9 while 8 clients log', () => {
  it(`loses no acknowledged record over ${ROUNDS} SIGKILL rounds (seed ${SEED})`, async () => {
    // Kill times come from their own stream, so they replay exactly whatever the clients' interleaving.
    const killDelay = seededRandom(SEED);
    const workload = seededRandom(SEED + 1);
    const dataDir = join(tempDir('taskhistory-crash-'), 'data');
    const socketPath = join(tempDir('taskhistory-crash-run-'), 'taskhistoryd.sock');
    // Never trim: every acknowledged record must stay visible in to_dict.
    const args = ['--max-tasks', '1000000'];
    const acks = new Map<number, Ack>();
    const unexpected: string[] = [];
    let roundsKilledMidCall = 0;
    let daemon: Daemon = await startDaemon({ dataDir, socketPath, args });

    for (let round = 1; round <= ROUNDS; round++) {
      const control = await openRawSocket(socketPath);
      const leftovers = ((await control.call('to_dict', {})).tasks as TaskView[]).filter((t) => t.status === 'running').map((t) => t.task_id);
      control.close();
      const acksBefore = acks.size;
      const lastSeqBefore = Math.max(0, ...acks.keys());
      const clients = await Promise.all(Array.from({ length: CLIENTS }, async () => new LoadClient(await openRawSocket(socketPath), acks, unexpected)));
      const runs = clients.map((client, i) => client.run(`r${round}c${i}`, workload, leftovers));

      // The random moment counts from the round's first acknowledgement, so no round is empty.
      await waitFor(() => acks.size > acksBefore, 15_000, `round ${round}: a first acknowledged record`);
      await sleep(50 + Math.floor(killDelay() * 350));
      if (clients.some((client) => client.inFlight)) roundsKilledMidCall++;
      expect(await daemon.stop('SIGKILL'), `round ${round}`).toEqual({ code: null, signal: 'SIGKILL' });
      await Promise.all(runs);
      expect(unexpected, `round ${round}: calls that failed other than by the kill`).toEqual([]);

      // The data dir alone, nothing running: the file parses, the chain verifies and holds every ack.
      const onDisk = verifyDataFileOnDisk(join(dataDir, 'task_history.json'));
      expect(onDisk, `round ${round}: verify of the data dir after the kill`).toMatchObject({ ok: true });
      const records = chainOnDisk(dataDir, join(dataDir, 'task_history.json'));
      expectGapFree(records, `round ${round}, on disk`);
      expect(missingFromChain(acks.values(), records), `round ${round}: acknowledged records on disk`).toEqual([]);

      daemon = await startDaemon({ dataDir, socketPath, args });
      const check = await openRawSocket(socketPath);
      const status = await check.call('status', {});
      expect(status.last_seq, `round ${round}: last_seq after restart`).toBe(records.length);
      expect(await check.call('verify', {}), `round ${round}: verify after restart`).toMatchObject({ ok: true, first_bad_seq: null, head: { seq: records.length } });
      const tasks = (await check.call('to_dict', {})).tasks as TaskView[];
      expect(missingFromTasks(acks.values(), tasks), `round ${round}: acknowledged records in to_dict`).toEqual([]);
      const roundAck = [...acks.values()].find((ack) => ack.seq > lastSeqBefore && ack.type === 'task_created');
      if (roundAck) expect((await check.call('get_task', { task_id: roundAck.task_id })).seq).toBe(roundAck.seq);
      check.close();
    }

    expect(roundsKilledMidCall, 'rounds in which the kill hit a call in flight').toBeGreaterThanOrEqual(ROUNDS / 2);

    // A clean stop folds the journal into the file: the file alone then holds the whole chain.
    expect(await daemon.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    expect(readdirSync(dataDir).filter((name) => name.includes('.journal.'))).toEqual([]);
    const finalFile = join(dataDir, 'task_history.json');
    const doc = parseDataFile(readFileSync(finalFile, 'utf8'));
    expect(verifyDataFileOnDisk(finalFile)).toMatchObject({ ok: true, head: doc.head });
    const kept = recordsOfDataFile(doc, sha256Hex);
    expectGapFree(kept, 'the final file');
    expect(missingFromChain(acks.values(), kept)).toEqual([]);
    expect(missingFromTasks(acks.values(), doc.tasks)).toEqual([]);
  }, 180_000);
});

describe('a torn write in the journal after kill -9', () => {
  it('is cut at restart with the preallocated space, and every acknowledged record stays', async () => {
    const daemon = await startDaemon();
    const raw = await openRawSocket(daemon.socketPath);
    const { task_id } = await raw.call('create_task', { description: 'migrate the database', mode: 'autonomous', steps: ['dump', 'load'] });
    let lastAck = 0;
    for (let step = 1; step <= 3; step++) lastAck = (await raw.call('log_step', { task_id, step_num: step, command: `step ${step}`, status: 'success', output: 'ok' })).seq;
    raw.close();
    expect(await daemon.stop('SIGKILL')).toEqual({ code: null, signal: 'SIGKILL' });

    // The segment holds its lines, then zeros written ahead: the end of the lines is the first NUL.
    const [segment] = sortedJournalSegments(readdirSync(daemon.dataDir));
    const segmentPath = join(daemon.dataDir, segment);
    const bytes = readFileSync(segmentPath);
    const linesEnd = bytes.indexOf(0);
    expect(linesEnd, 'preallocated zeros after the lines').toBeGreaterThan(0);
    expect(bytes.subarray(linesEnd).every((byte) => byte === 0)).toBe(true);
    expect(parseJournal(bytes.toString('utf8'))).toMatchObject({ tornTail: false, records: [{ seq: 1 }, { seq: 2 }, { seq: 3 }, { seq: lastAck }] });

    // A write that was never acknowledged, torn across pages: its start, zeros, then a later piece.
    const fd = openSync(segmentPath, 'r+');
    writeSync(fd, '{"seq":5,"prev_hash":"', linesEnd);
    writeSync(fd, 'a later page of the torn write', linesEnd + 8192);
    closeSync(fd);
    expect(parseJournal(readFileSync(segmentPath, 'utf8'))).toMatchObject({ tornTail: true, validBytes: linesEnd });
    expect(verifyDataFileOnDisk(daemon.dataFile)).toMatchObject({ ok: true, head: { seq: lastAck } });

    const restarted = await startDaemon({ dataDir: daemon.dataDir });
    const check = await openRawSocket(restarted.socketPath);
    expect((await check.call('status', {})).last_seq).toBe(lastAck);
    expect((await check.call('log_step', { task_id, step_num: 4, command: 'step 4', status: 'success' })).seq).toBe(lastAck + 1);
    expect(await check.call('verify', {})).toMatchObject({ ok: true, head: { seq: lastAck + 1 } });
    expect(restarted.stderr()).toContain('cut a torn, never-acknowledged write off the journal');
    const after = parseJournal(readFileSync(segmentPath, 'utf8'));
    expect(after.tornTail).toBe(false);
    expect(after.records.map((record) => record.seq)).toEqual([1, 2, 3, 4, 5]);
    check.close();
    await restarted.stop('SIGKILL');
  });
});
