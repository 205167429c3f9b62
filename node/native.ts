import { createRequire } from 'node:module';
import { join } from 'node:path';
import { PACKAGE_ROOT } from './package-root.js';
import type { PeerCredentials } from './peer-credentials.js';

/** What native/taskhistory_native.cc exports: the kernel facilities Node has no API for. */
export interface NativeAddon {
  /** SO_PEERCRED of a connected Unix stream socket: who connected, as the kernel saw it. */
  peerCredentials(fd: number): PeerCredentials;
  /** One datagram to a Unix socket path ('@name' for an abstract name); returns the bytes sent. */
  sendDatagram(path: string, message: Buffer): number;
}

/** Where `node-gyp rebuild --directory=native` (the package's install script) puts the addon. */
export const NATIVE_ADDON_FILE = join(PACKAGE_ROOT, 'native', 'build', 'Release', 'taskhistory_native.node');

export class NativeAddonUnavailable extends Error {
  constructor(
    readonly file: string,
    cause: unknown,
  ) {
    const reason = cause instanceof Error ? cause.message.split('\n')[0] : String(cause);
    super(
      `cannot load the native addon ${file} (${reason}); build it with "npm rebuild" in ${PACKAGE_ROOT} ` +
        '(it needs g++, make, python3 and the headers of the Node that runs taskhistory)',
    );
    this.name = 'NativeAddonUnavailable';
  }
}

/** Loads an addon file; a failure becomes NativeAddonUnavailable, naming the file and the fix. */
export function loadNativeAddon(file: string): NativeAddon {
  try {
    return createRequire(import.meta.url)(file) as NativeAddon;
  } catch (error) {
    throw new NativeAddonUnavailable(file, error);
  }
}

let addon: NativeAddon | undefined;

/** The package's addon, loaded on first use so that code which never needs it never fails on it. */
export function nativeAddon(): NativeAddon {
  addon ??= loadNativeAddon(NATIVE_ADDON_FILE);
  return addon;
}
