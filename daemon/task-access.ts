import type { Peer } from './peer-identity.js';

/** Who may see and write which tasks (README, "Security"): a caller as the read filter and the write check see it. */
export interface Viewer {
  /** Root, the daemon's own uid, an --admin-group member, or anyone when attribution is off. */
  readonly seesAll: boolean;
  /** The caller's uid; null when attribution is off. */
  readonly uid: number | null;
  /** Whether a task created by `creatorUid` (undefined: its record names no writer) is the caller's to see and write. */
  sees(creatorUid: number | undefined): boolean;
}

export interface AccessOptions {
  daemonUid: number;
  /** Members (primary or supplementary) see every task; null: no admin group. */
  adminGid: number | null;
}

const EVERYONE: Viewer = { seesAll: true, uid: null, sees: () => true };

/**
 * Per-user views on a shared socket, as journald shows each user their own journal: a uid sees and
 * writes only the tasks it created, unless it is root, the daemon's own uid or in the admin group.
 * A daemon of one user (everyone is its uid) therefore behaves as if there were no filter.
 */
export class TaskAccess {
  constructor(private readonly options: AccessOptions) {}

  /** The caller on a connection whose peer is `peer` (null: attribution is off, nobody is told apart). */
  viewerOf(peer: Peer | null): Viewer {
    if (peer === null) return EVERYONE;
    const { daemonUid, adminGid } = this.options;
    const { uid } = peer;
    const admin = adminGid !== null && (peer.gid === adminGid || peer.groups.includes(adminGid));
    if (uid === 0 || uid === daemonUid || admin) return { seesAll: true, uid, sees: () => true };
    return { seesAll: false, uid, sees: (creatorUid) => creatorUid === uid };
  }
}
