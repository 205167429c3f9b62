import type { Socket } from 'node:net';
import { log } from '../node/log.js';
import { nativeAddon, NativeAddonUnavailable } from '../node/native.js';
import { peerCredentialsOf } from '../node/peer-credentials.js';

/** Why a connection is refused by the per-uid cap: whose it is and how many that uid holds. */
export interface PeerCapRefusal {
  uid: number;
  connections: number;
}

/**
 * Connections per peer uid, as the kernel recorded it (SO_PEERCRED on the accepted descriptor, so
 * sockets passed by systemd are counted the same way). Every uid counts alike, root and the daemon's
 * own included: a cap that exempted them would let one runaway agent of the owner take every slot.
 * Without the native addon nothing is counted (said once in the log) and only the overall cap holds.
 */
export class PeerConnectionCap {
  private readonly connectionsByUid = new Map<number, number>();
  private readonly addonMissing: boolean;

  constructor(private readonly maxPerUid: number) {
    this.addonMissing = !addonLoads();
  }

  /** Counts the socket under its peer's uid until it closes; a refusal when that uid is over the cap. */
  admit(socket: Socket): PeerCapRefusal | null {
    const uid = this.peerUid(socket);
    if (uid === null) return null;
    const connections = (this.connectionsByUid.get(uid) ?? 0) + 1;
    this.connectionsByUid.set(uid, connections);
    socket.once('close', () => this.release(uid));
    return connections > this.maxPerUid ? { uid, connections } : null;
  }

  private release(uid: number): void {
    const left = (this.connectionsByUid.get(uid) ?? 1) - 1;
    if (left > 0) this.connectionsByUid.set(uid, left);
    else this.connectionsByUid.delete(uid);
  }

  /** null when the uid cannot be known: no addon, or a peer already gone (it closes at once anyway). */
  private peerUid(socket: Socket): number | null {
    if (this.addonMissing) return null;
    try {
      return peerCredentialsOf(socket).uid;
    } catch {
      return null;
    }
  }
}

/** Loads the addon at start so that its absence is logged once, before any client connects. */
function addonLoads(): boolean {
  try {
    nativeAddon();
    return true;
  } catch (error) {
    if (!(error instanceof NativeAddonUnavailable)) throw error;
    log.warn('no per-uid connection cap: the native addon is missing, so only --max-connections applies', { error: error.message });
    return false;
  }
}
