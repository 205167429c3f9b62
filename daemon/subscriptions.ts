import { EVENT_NOTIFICATION, type EventParams } from '../protocol/methods.js';
import type { ChainRecord } from '../protocol/records.js';
import type { Connection } from './client-connection.js';
import type { Viewer } from './task-access.js';

interface Subscription {
  connection: Connection;
  viewer: Viewer;
  taskId?: string;
}

/**
 * Live subscriptions: after each durable commit every subscriber gets an `event` notification per
 * record it asked for and may see (records of its own tasks, or all for those who see all; the
 * daemon's own records go to everyone), in commit order. Subscriptions die with their connection.
 */
export class SubscriptionHub {
  private readonly subscriptions = new Map<string, Subscription>();
  private nextId = 1;

  /** `creatorOf`: uid of the writer who created a kept task (undefined: no such task, or no writer). */
  constructor(private readonly creatorOf: (taskId: string) => number | undefined) {}

  subscribe(connection: Connection, viewer: Viewer, taskId?: string): string {
    const id = `sub-${this.nextId++}`;
    this.subscriptions.set(id, { connection, viewer, taskId });
    connection.onClose(() => this.subscriptions.delete(id));
    return id;
  }

  /** False when the subscription does not exist on this connection. */
  unsubscribe(connection: Connection, id: string): boolean {
    const subscription = this.subscriptions.get(id);
    if (!subscription || subscription.connection !== connection) return false;
    return this.subscriptions.delete(id);
  }

  /**
   * Sends each record to its subscribers. Each record is serialized once for all of them; a
   * subscriber that stops reading is cut off by its connection's output bound, naming why.
   */
  publish(records: ChainRecord[]): void {
    if (this.subscriptions.size === 0) return;
    const bodies = records.map((record) => {
      const taskId = 'task_id' in record ? record.task_id : null;
      const rest: Omit<EventParams, 'subscription'> = { type: record.type, task_id: taskId, seq: record.seq, hash: record.hash, ts: record.ts, record };
      return { taskId, creatorUid: this.creatorOfRecord(record), json: JSON.stringify(rest).slice(1) };
    });
    for (const [id, { connection, viewer, taskId }] of this.subscriptions) {
      const head = `{"jsonrpc":"2.0","method":${JSON.stringify(EVENT_NOTIFICATION)},"params":{"subscription":${JSON.stringify(id)},`;
      for (const body of bodies) {
        if (taskId !== undefined && body.taskId !== taskId) continue;
        if (body.taskId !== null && !viewer.sees(body.creatorUid)) continue;
        connection.send(`${head}${body.json}}`);
      }
    }
  }

  /**
   * Who created the task a record is about. A task trimmed by max_tasks in the very group that
   * completed it is gone from the store by now: its record's own writer (the creator, or someone
   * who sees all anyway, since writes are refused to anyone else) stands in.
   */
  private creatorOfRecord(record: ChainRecord): number | undefined {
    if (record.type === 'task_created') return record.writer?.uid;
    if (record.type === 'tamper_detected') return undefined;
    return this.creatorOf(record.task_id) ?? record.writer?.uid;
  }
}
