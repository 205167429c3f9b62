import type { Socket } from 'node:net';
import type { Writer } from '../protocol/records.js';
import { peerCredentialsOf, processGroups, processIdentity, type PeerCredentials, type ProcessIdentity } from '../node/peer-credentials.js';

/**
 * Who is at the other end of a connection, read once when it is accepted: uid, gid and pid as the
 * kernel recorded them at connect time (SO_PEERCRED), what /proc said that process was at accept
 * time, and its supplementary groups (for --admin-group).
 */
export interface Peer extends PeerCredentials, ProcessIdentity {
  /** From /proc/PID/status; empty when /proc hides the process (then only `gid` counts). */
  groups: readonly number[];
}

/** The peer of an accepted Unix socket; throws when the kernel cannot say (no addon, socket already gone). */
export function identifyPeer(socket: Socket): Peer {
  const credentials = peerCredentialsOf(socket);
  return { ...credentials, ...processIdentity(credentials.pid), groups: processGroups(credentials.pid) ?? [] };
}

/** What a record written over the peer's connection says about who wrote it. */
export function writerOf(peer: Peer): Writer {
  let writer = writers.get(peer);
  if (!writer) {
    const { uid, gid, pid, comm, exe } = peer;
    writers.set(peer, (writer = Object.freeze({ uid, gid, pid, comm, exe })));
  }
  return writer;
}

/** One frozen writer per peer, shared by every record of its connection (one object a connection, not a step). */
const writers = new WeakMap<Peer, Writer>();

/** This daemon as the writer of the records it writes itself (tamper_detected). */
export function daemonWriter(): Writer {
  return { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, pid: process.pid, ...processIdentity(process.pid) };
}
