import { connect } from 'node:net';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TaskHistoryClient } from '../client/sdk.js';
import { ErrorCodes } from '../protocol/errors.js';
import { socketUrl } from '../protocol/paths.js';
import type { TaskHistoryDict, TaskView } from '../protocol/task-view.js';
import { runCli, startDaemon, type Daemon } from './daemon-harness.js';
import { PYTHON_CLIENT_DIR, PYTHON_TEST_DIR, lastJsonLine, runPython } from './python/run-python.js';

/** The small daemon's message limit; its log is about five times larger. */
const LIMIT = 65536;
const BIG_STEPS = 300;

/** A raw connection that reports each answer with its size on the wire. */
interface Wire {
  name: string;
  call(method: string, params?: unknown): Promise<{ bytes: number; answer: any }>;
  close(): void;
}

let nextId = 1;
const request = (method: string, params?: unknown) => JSON.stringify({ jsonrpc: '2.0', id: nextId++, method, ...(params !== undefined && { params }) });

async function webSocketWire(socketPath: string): Promise<Wire> {
  const ws = new WebSocket(socketUrl(socketPath));
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  let pending: { resolve(message: Buffer): void; reject(error: Error): void } | null = null;
  ws.on('message', (data: Buffer) => pending?.resolve(data));
  ws.on('close', (code) => pending?.reject(new Error(`the daemon closed the WebSocket (${code})`)));
  return {
    name: 'WebSocket',
    call: async (method, params) => {
      const data = await new Promise<Buffer>((resolve, reject) => {
        pending = { resolve, reject };
        ws.send(request(method, params));
      });
      return { bytes: data.length, answer: JSON.parse(data.toString('utf8')) };
    },
    close: () => ws.close(),
  };
}

async function lineWire(socketPath: string): Promise<Wire> {
  const socket = connect(socketPath);
  await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  let buffered = Buffer.alloc(0);
  let waiting: ((line: Buffer) => void) | null = null;
  socket.on('data', (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    const end = buffered.indexOf(0x0a);
    if (end === -1 || !waiting) return;
    const line = buffered.subarray(0, end + 1);
    buffered = buffered.subarray(end + 1);
    waiting(line);
  });
  return {
    name: 'newline JSON',
    call: (method, params) =>
      new Promise((resolve) => {
        waiting = (line) => resolve({ bytes: line.length, answer: JSON.parse(line.toString('utf8')) });
        socket.write(`${request(method, params)}\n`);
      }),
    close: () => socket.destroy(),
  };
}

/** Every page of a paged call, with the largest message seen. */
async function readPages(wire: Wire, method: string, params: Record<string, unknown>): Promise<{ pages: any[]; largest: number }> {
  const pages: any[] = [];
  let largest = 0;
  let cursor: string | null = null;
  do {
    const { bytes, answer } = await wire.call(method, { ...params, cursor });
    expect(answer.error, `${method} page ${pages.length + 1} over ${wire.name}`).toBeUndefined();
    largest = Math.max(largest, bytes);
    pages.push(answer.result);
    cursor = answer.result.next_cursor;
  } while (cursor !== null);
  return { pages, largest };
}

/** Joins fragments as the README tells clients to: consecutive entries with the same task_id are one task. */
function joined(pages: any[]): TaskView[] {
  const tasks: TaskView[] = [];
  for (const page of pages) {
    for (const fragment of page.tasks as TaskView[]) {
      const last = tasks[tasks.length - 1];
      if (last?.task_id === fragment.task_id) last.steps = [...last.steps, ...fragment.steps];
      else tasks.push(structuredClone(fragment));
    }
  }
  return tasks;
}

/** Whether some task was split over a page boundary. */
const splitAcrossPages = (pages: any[]) =>
  pages.some((page, index) => index > 0 && page.tasks[0]?.task_id !== undefined && page.tasks[0].task_id === pages[index - 1].tasks.at(-1)?.task_id);

describe('answers larger than --max-message-bytes', () => {
  let small: Daemon;
  let wires: Wire[];
  /** One-shot answers of a daemon with the default (16 MiB) limit, over the same data dir. */
  const reference = {} as { dict: TaskHistoryDict; recent3: TaskView[]; recent2: TaskView[]; big: TaskView; smallTask: TaskView };
  const ids = {} as { small: string; big: string; running: string };

  beforeAll(async () => {
    const large = await startDaemon();
    const client = await TaskHistoryClient.connect({ socketPath: large.socketPath });
    ids.small = (await client.createTask({ description: 'a small one', mode: 'autonomous', steps: [{ command: 'true' }] })).task_id;
    await client.logStep({ task_id: ids.small, step_num: 1, command: 'true', status: 'success', output: 'fine' });
    await client.completeTask({ task_id: ids.small, final_status: 'completed' });
    ids.big = (await client.createTask({ description: 'a long one', mode: 'step-by-step', steps: [{ command: 'build', note: 'plän' }] })).task_id;
    for (let step = 1; step <= BIG_STEPS; step++) {
      // Multi-byte text: a pager counting characters instead of bytes would overfill its pages.
      await client.logStep({ task_id: ids.big, step_num: step, command: `build part ${step}`, status: 'success', output: `${step} ${'ü✓'.repeat(200)}`, duration_ms: step });
    }
    await client.completeTask({ task_id: ids.big, final_status: 'failed' });
    ids.running = (await client.createTask({ description: 'still running', mode: 'autonomous', steps: [] })).task_id;
    await client.logStep({ task_id: ids.running, step_num: 1, command: 'sleep 1', status: 'success' });
    await client.close();

    const socket = await webSocketWire(large.socketPath);
    const oneShot = async (method: string, params?: unknown) => (await socket.call(method, params)).answer.result;
    reference.dict = await oneShot('to_dict');
    reference.recent3 = await oneShot('get_recent', { count: 3 });
    reference.recent2 = await oneShot('get_recent', { count: 2 });
    reference.big = await oneShot('get_task', { task_id: ids.big });
    reference.smallTask = await oneShot('get_task', { task_id: ids.small });
    socket.close();
    expect(reference.dict.tasks.map((task) => task.steps.length)).toEqual([1, BIG_STEPS, 1]);
    expect(Buffer.byteLength(JSON.stringify(reference.dict))).toBeGreaterThan(4 * LIMIT);
    expect((await large.stop()).code).toBe(0);

    small = await startDaemon({ dataDir: large.dataDir, args: ['--max-message-bytes', String(LIMIT)] });
    wires = [await webSocketWire(small.socketPath), await lineWire(small.socketPath)];
  });
  afterAll(() => wires?.forEach((wire) => wire.close()));

  it('a one-shot to_dict, get_recent or get_task too large for a message gets 1008 naming the paged form; the connection stays usable', async () => {
    const tooLarge: [string, unknown, string][] = [
      ['to_dict', undefined, 'to_dict with {"cursor": null}'],
      ['get_recent', { count: 3 }, 'get_recent with {"cursor": null}'],
      ['get_task', { task_id: ids.big }, 'get_task with {"cursor": null}'],
    ];
    for (const wire of wires) {
      for (const [method, params, pagedForm] of tooLarge) {
        const { bytes, answer } = await wire.call(method, params);
        expect(bytes, `${method} over ${wire.name}`).toBeLessThan(1024);
        expect(answer.error.code).toBe(ErrorCodes.AnswerTooLarge);
        expect(answer.error.message).toContain(pagedForm);
        expect(answer.error.data).toEqual({ limit: LIMIT, estimated_bytes: expect.any(Number), paged_form: pagedForm });
        expect(answer.error.data.estimated_bytes).toBeGreaterThan(LIMIT);
        const status = await wire.call('status');
        expect(status.answer.result.tasks, `status after ${method} over ${wire.name}`).toBe(3);
      }
    }
  });

  it('one-shot answers that fit still come whole', async () => {
    for (const wire of wires) {
      expect((await wire.call('get_task', { task_id: ids.small })).answer.result).toEqual(reference.smallTask);
      expect((await wire.call('get_recent', { count: 1 })).answer.result).toEqual(reference.recent3.slice(-1));
    }
  });

  it('paged forms over WebSocket and newline JSON: every page within the limit, joined exactly the one-shot answers', async () => {
    for (const wire of wires) {
      for (const pageBytes of [undefined, 4096]) {
        const extra = pageBytes === undefined ? {} : { page_bytes: pageBytes };
        const dict = await readPages(wire, 'to_dict', extra);
        expect(dict.largest, `to_dict over ${wire.name}`).toBeLessThanOrEqual(LIMIT);
        expect(dict.pages.length).toBeGreaterThan(4);
        expect(splitAcrossPages(dict.pages)).toBe(true);
        for (const page of dict.pages) expect(Object.keys(page).sort()).toEqual(['count', 'max_tasks', 'next_cursor', 'tasks']);
        expect({ tasks: joined(dict.pages), count: dict.pages.at(-1).count, max_tasks: dict.pages.at(-1).max_tasks }).toEqual(reference.dict);

        const recent3 = await readPages(wire, 'get_recent', { count: 3, ...extra });
        expect(recent3.largest).toBeLessThanOrEqual(LIMIT);
        expect(joined(recent3.pages)).toEqual(reference.recent3);
        const recent2 = await readPages(wire, 'get_recent', { count: 2, ...extra });
        expect(joined(recent2.pages)).toEqual(reference.recent2);

        const task = await readPages(wire, 'get_task', { task_id: ids.big, ...extra });
        expect(task.largest).toBeLessThanOrEqual(LIMIT);
        expect(task.pages.length).toBeGreaterThan(4);
        expect(task.pages.every((page) => page.tasks.length === 1)).toBe(true);
        expect(joined(task.pages)).toEqual([reference.big]);
      }
      // A page is at most page_bytes (its steps are far smaller than a page).
      const { largest } = await readPages(wire, 'to_dict', { page_bytes: 4096 });
      expect(largest).toBeLessThanOrEqual(4096 + 100);
    }
  });

  it("the SDK's toDict(), getRecent() and getTask() assemble the pages; toDictPages() yields them", async () => {
    const client = await TaskHistoryClient.connect({ socketPath: small.socketPath });
    try {
      expect(await client.toDict()).toEqual(reference.dict);
      expect(await client.getRecent(3)).toEqual(reference.recent3);
      expect(await client.getRecent(2)).toEqual(reference.recent2);
      expect(await client.getTask(ids.big)).toEqual(reference.big);
      const pages = [];
      for await (const page of client.toDictPages({ pageBytes: 8192 })) pages.push(page);
      expect(pages.length).toBeGreaterThan(10);
      expect(pages.every((page) => Buffer.byteLength(JSON.stringify(page)) <= 8192)).toBe(true);
      expect(joined(pages)).toEqual(reference.dict.tasks);
    } finally {
      await client.close();
    }
  });

  it("the Python client's to_dict(), get_recent() and get_task() assemble the pages", async () => {
    const run = await runPython([`${PYTHON_TEST_DIR}/client_paging.py`, small.socketPath, ids.big], [PYTHON_CLIENT_DIR]);
    expect(run.code, run.stderr).toBe(0);
    const out = lastJsonLine(run);
    expect(out.dict).toEqual(reference.dict);
    expect(out.recent).toEqual(reference.recent3);
    expect(out.task).toEqual(reference.big);
  });

  it('taskhistory export streams the whole log as valid JSON equal to to_dict', async () => {
    const run = await runCli(['--socket', small.socketPath, 'export']);
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toEqual(reference.dict);
  });

  it('a malformed cursor, or page_bytes without one, gets -32602 naming the field', async () => {
    const [wire] = wires;
    const firstToDict = (await wire.call('to_dict', { cursor: null, page_bytes: 4096 })).answer.result.next_cursor as string;
    const firstOfBig = (await wire.call('get_task', { task_id: ids.big, cursor: null, page_bytes: 4096 })).answer.result.next_cursor as string;
    const encoded = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
    const invalid: [string, Record<string, unknown>, string][] = [
      ['to_dict', { cursor: 'not a cursor!' }, 'cursor'],
      ['to_dict', { cursor: Buffer.from('plain text').toString('base64url') }, 'cursor'],
      ['to_dict', { cursor: encoded({ m: 'to_dict', a: 1, t: 0 }) }, 'cursor'],
      ['to_dict', { cursor: encoded({ m: 'to_dict', a: 1_000_000, t: 0, s: 0, c: 3 }) }, 'cursor'],
      ['to_dict', { cursor: encoded({ m: 'to_dict', a: 1, t: 0, s: 0 }) }, 'cursor'],
      ['get_recent', { cursor: encoded({ m: 'get_recent', a: 1, t: 0, s: 0, c: 3 }) }, 'cursor'],
      ['to_dict', { cursor: '' }, 'cursor'],
      ['to_dict', { cursor: 7 }, 'cursor'],
      ['get_recent', { cursor: firstToDict }, 'cursor'],
      ['get_task', { task_id: ids.small, cursor: firstOfBig }, 'cursor'],
      ['to_dict', { page_bytes: 4096 }, 'page_bytes'],
      ['to_dict', { cursor: null, page_bytes: 10 }, 'page_bytes'],
      ['get_task', { task_id: ids.big, page_bytes: 4096 }, 'page_bytes'],
    ];
    for (const [method, params, field] of invalid) {
      const { answer } = await wire.call(method, params);
      expect(answer.error?.code, `${method} ${JSON.stringify(params)}`).toBe(ErrorCodes.InvalidParams);
      expect(answer.error.data.issues.map((issue: { field: string }) => issue.field)).toEqual([field]);
    }
  });

  // Last: it adds records.
  it('pages are a snapshot: a step, a completion and a task committed between pages are not in them', async () => {
    const client = await TaskHistoryClient.connect({ socketPath: small.socketPath });
    try {
      for (const wire of wires) {
        // A task of several pages, still running when the first pages are read.
        const { task_id } = await client.createTask({ description: `read while it runs (${wire.name})`, mode: 'autonomous', steps: [] });
        for (let step = 1; step <= 6; step++) await client.logStep({ task_id, step_num: step, command: `part ${step}`, status: 'success', output: 'x'.repeat(1500) });
        const before = await client.toDict();
        const taskBefore = await client.getTask(task_id);

        const firstOfDict = (await wire.call('to_dict', { cursor: null, page_bytes: 8192 })).answer.result;
        const firstOfTask = (await wire.call('get_task', { task_id, cursor: null, page_bytes: 2048 })).answer.result;
        expect(firstOfTask.next_cursor).not.toBeNull();
        await client.logStep({ task_id, step_num: 7, command: 'after the first page', status: 'success' });
        await client.completeTask({ task_id, final_status: 'completed' });
        await client.createTask({ description: `created between pages (${wire.name})`, mode: 'autonomous', steps: [] });

        const dictPages = [firstOfDict];
        for (let cursor = firstOfDict.next_cursor; cursor !== null; ) {
          const page = (await wire.call('to_dict', { cursor, page_bytes: 8192 })).answer.result;
          dictPages.push(page);
          cursor = page.next_cursor;
        }
        expect({ tasks: joined(dictPages), count: dictPages.at(-1).count, max_tasks: dictPages.at(-1).max_tasks }).toEqual(before);
        const taskPages = [firstOfTask];
        for (let cursor = firstOfTask.next_cursor; cursor !== null; ) {
          const page = (await wire.call('get_task', { task_id, cursor, page_bytes: 2048 })).answer.result;
          taskPages.push(page);
          cursor = page.next_cursor;
        }
        expect(joined(taskPages)).toEqual([taskBefore]);
        expect(taskBefore.status).toBe('running');

        // A new walk shows all three records.
        const now = await client.toDict();
        expect(now.count).toBe(before.count + 1);
        expect(now.tasks.find((task) => task.task_id === task_id)).toMatchObject({ status: 'completed', steps: { length: 7 } });
      }
    } finally {
      await client.close();
    }
  });
});

describe('a task trimmed by max_tasks between pages', () => {
  it('is skipped from there on; the pages keep the count of their snapshot', async () => {
    const daemon = await startDaemon({ args: ['--max-tasks', '2'] });
    const client = await TaskHistoryClient.connect({ socketPath: daemon.socketPath });
    const wire = await lineWire(daemon.socketPath);
    try {
      const oldest = (await client.createTask({ description: 'trimmed while read', mode: 'autonomous', steps: [] })).task_id;
      for (let step = 1; step <= 20; step++) await client.logStep({ task_id: oldest, step_num: step, command: `part ${step}`, status: 'success', output: 'o'.repeat(1500) });
      await client.completeTask({ task_id: oldest, final_status: 'completed' });
      const kept = (await client.createTask({ description: 'kept', mode: 'autonomous', steps: [] })).task_id;
      await client.completeTask({ task_id: kept, final_status: 'completed' });
      const keptTask = await client.getTask(kept);

      const first = (await wire.call('to_dict', { cursor: null, page_bytes: 4096 })).answer.result;
      const firstOfOldest = (await wire.call('get_task', { task_id: oldest, cursor: null, page_bytes: 4096 })).answer.result;
      expect(first.tasks.map((task: TaskView) => task.task_id)).toEqual([oldest]);
      expect(first.count).toBe(2);
      // A third finished task: max_tasks 2 trims the oldest.
      const newest = (await client.createTask({ description: 'pushes the oldest out', mode: 'autonomous', steps: [] })).task_id;
      await client.completeTask({ task_id: newest, final_status: 'completed' });

      const pages = [first];
      for (let cursor = first.next_cursor; cursor !== null; ) {
        const page = (await wire.call('to_dict', { cursor, page_bytes: 4096 })).answer.result;
        pages.push(page);
        cursor = page.next_cursor;
      }
      const tasks = joined(pages);
      expect(tasks.map((task) => task.task_id)).toEqual([oldest, kept]);
      expect(tasks[0].steps).toEqual(first.tasks[0].steps);
      expect(tasks[1]).toEqual(keptTask);
      expect(pages.map((page) => page.count)).toEqual(pages.map(() => 2));

      const rest = await wire.call('get_task', { task_id: oldest, cursor: firstOfOldest.next_cursor, page_bytes: 4096 });
      expect(rest.answer.error.code).toBe(ErrorCodes.TaskNotFound);
    } finally {
      wire.close();
      await client.close();
    }
  });
});

describe('a step larger than the message limit', () => {
  it('gets 1008 naming the task instead of an oversized page; the connection stays usable', async () => {
    const large = await startDaemon();
    const client = await TaskHistoryClient.connect({ socketPath: large.socketPath });
    const { task_id } = await client.createTask({ description: 'one huge step', mode: 'autonomous', steps: [] });
    await client.logStep({ task_id, step_num: 1, command: 'cat big.log', status: 'success', output: 'b'.repeat(40_000) });
    await client.close();
    expect((await large.stop()).code).toBe(0);

    const small = await startDaemon({ dataDir: large.dataDir, args: ['--max-message-bytes', '16384'] });
    const wire = await lineWire(small.socketPath);
    try {
      for (const [method, params] of [['to_dict', { cursor: null }], ['get_task', { task_id, cursor: null }]] as const) {
        const { bytes, answer } = await wire.call(method, params);
        expect(bytes).toBeLessThan(16384);
        expect(answer.error.code).toBe(ErrorCodes.AnswerTooLarge);
        expect(answer.error.message).toContain('--max-message-bytes');
        expect(answer.error.data).toMatchObject({ limit: 16384, task_id });
      }
      expect((await wire.call('status')).answer.result.tasks).toBe(1);
    } finally {
      wire.close();
    }
  });
});
