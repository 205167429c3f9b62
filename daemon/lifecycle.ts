/**
 * The shape of every long-lived part of the daemon (store, socket server, tamper watch, cloud
 * sync): main starts them in order and stops them in reverse.
 */
export interface Lifecycle {
  start(): Promise<void>;
  stop(): Promise<void>;
}
