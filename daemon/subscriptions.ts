import { EVENT_NOTIFICATION, type EventParams } from '../protocol/methods.js';
import type { ChainRecord } from '../protocol/records.js';
import type { Connection } from './socket-server.js';

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

  publish(records: ChainRecord[]): void {
    if (this.subscriptions.size === 0) return;
    for (const [id, { connection, taskId }] of this.subscriptions) {
      for (const record of records) {
        const recordTaskId = 'task_id' in record ? record.task_id : null;
        if (taskId !== undefined && recordTaskId !== taskId) continue;
        const params: EventParams = { subscription: id, type: record.type, task_id: recordTaskId, seq: record.seq, hash: record.hash, ts: record.ts, record };
        connection.send(JSON.stringify({ jsonrpc: '2.0', method: EVENT_NOTIFICATION, params }));
      }
    }
  }
}
