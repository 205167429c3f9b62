import { EVENT_NOTIFICATION, type EventParams } from '../protocol/methods.js';
import type { ChainRecord } from '../protocol/records.js';
import type { Connection } from './client-connection.js';

interface Subscription {
  connection: Connection;
  taskId?: string;
}

/**
 * Live subscriptions: after each durable commit every subscriber gets an `event` notification per
 * record it asked for, in commit order. Subscriptions die with their connection.
 */
export class SubscriptionHub {
  private readonly subscriptions = new Map<string, Subscription>();
  private nextId = 1;

  subscribe(connection: Connection, taskId?: string): string {
    const id = `sub-${this.nextId++}`;
    this.subscriptions.set(id, { connection, taskId });
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
      return { taskId, json: JSON.stringify(rest).slice(1) };
    });
    for (const [id, { connection, taskId }] of this.subscriptions) {
      const head = `{"jsonrpc":"2.0","method":${JSON.stringify(EVENT_NOTIFICATION)},"params":{"subscription":${JSON.stringify(id)},`;
      for (const body of bodies) {
        if (taskId !== undefined && body.taskId !== taskId) continue;
        connection.send(`${head}${body.json}}`);
      }
    }
  }
}
