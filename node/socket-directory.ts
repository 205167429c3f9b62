import { closeSync, constants, fchmodSync, fchownSync, fstatSync, lstatSync, mkdirSync, openSync, statSync, type Stats } from 'node:fs';
import { dirname } from 'node:path';
import { lookupUser } from './account-lookup.js';

/** The system service's user (systemd/sysusers.d): a socket directory it owns is the system daemon's. */
const SERVICE_USER = 'taskhistory';

/**
 * Whoever can write the socket's directory can move the socket aside and listen in its place,
 * receiving every call unredacted. So the daemon serves only from a directory it owns that
 * nobody else can write, and clients connect only through a directory owned by root or by
 * themselves (as ssh-agent and tmux do).
 */
export class UntrustedSocketDirectory extends Error {
  constructor(
    readonly directory: string,
    message: string,
  ) {
    super(message);
    this.name = 'UntrustedSocketDirectory';
  }
}

const octal = (mode: number) => `0${(mode & 0o7777).toString(8)}`;

/**
 * Creates the daemon's socket directory, or checks the one found: a real directory (not a
 * symlink), owned by this process's uid, mode 0700 without a group, exactly 0750 and owned by the
 * group with one. A directory it creates gets its mode and group through the open descriptor,
 * whatever the umask, so nothing swapped in meanwhile is changed.
 */
export function prepareSocketDirectory(dir: string, group?: { name: string; id: number }): void {
  const uid = process.geteuid?.() ?? 0;
  const wantMode = group ? 0o750 : 0o700;
  let created = false;
  mkdirSync(dirname(dir), { recursive: true, mode: 0o700 });
  try {
    mkdirSync(dir, { mode: 0o700 });
    created = true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  let fd: number;
  try {
    fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ELOOP' || code === 'ENOTDIR') {
      const what = lstatSync(dir).isSymbolicLink() ? 'a symbolic link' : 'not a directory';
      throw new UntrustedSocketDirectory(dir, `the socket directory ${dir} is ${what}; refusing to serve there. Remove it (rm ${dir}) so the daemon can create it, or pass --socket in a directory you own`);
    }
    throw error;
  }
  try {
    const found = fstatSync(fd);
    if (found.uid !== uid) {
      throw new UntrustedSocketDirectory(dir, `the socket directory ${dir} is owned by uid ${found.uid}, not by this daemon's uid ${uid}: its owner could replace the socket and read every call. Remove it (as root: rm -r ${dir}) so the daemon can create it, or pass --socket in a directory you own`);
    }
    if (created) {
      if (group) fchownSync(fd, -1, group.id);
      fchmodSync(fd, wantMode);
      return;
    }
    const mode = found.mode & 0o7777;
    const trusted = group ? mode === wantMode && found.gid === group.id : (mode & 0o022) === 0;
    if (!trusted) {
      const fix = group ? `chmod ${octal(wantMode)} ${dir} && chgrp ${group.name} ${dir}` : `chmod go-w ${dir}`;
      const want = group ? `exactly ${octal(wantMode)} with group ${group.name}` : 'not writable by group or others';
      throw new UntrustedSocketDirectory(dir, `the socket directory ${dir} has mode ${octal(mode)} (group ${found.gid}); it must be ${want}, or others could replace the socket. Fix it (${fix}) or remove it so the daemon creates it`);
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * The client's check before it sends anything: the socket's directory (and, if it is a symlink,
 * the link and its target) must be owned by root, the caller or the `taskhistory` service user,
 * and not writable by others unless sticky. A missing directory passes: connecting then fails as
 * "no daemon".
 */
export function checkSocketDirectory(socketPath: string): void {
  const dir = dirname(socketPath);
  const uid = process.geteuid?.() ?? 0;
  let link: Stats;
  try {
    link = lstatSync(dir);
  } catch {
    return;
  }
  for (const found of link.isSymbolicLink() ? [link, statOrNull(dir)] : [link]) {
    if (!found) return;
    if (found.uid !== 0 && found.uid !== uid && found.uid !== lookupUser(SERVICE_USER)?.id) {
      throw new UntrustedSocketDirectory(dir, `not connecting to ${socketPath}: its directory ${dir} is owned by uid ${found.uid}, neither root nor you (uid ${uid}) nor the ${SERVICE_USER} service user, so its owner could be listening in the daemon's place. Remove the directory (as root: rm -r ${dir}) and restart the daemon, or point --socket / TASKHISTORY_SOCKET at a socket in a directory root or you own`);
    }
    if ((found.mode & 0o002) !== 0 && (found.mode & 0o1000) === 0) {
      throw new UntrustedSocketDirectory(dir, `not connecting to ${socketPath}: its directory ${dir} is writable by everyone (mode ${octal(found.mode)}), so anyone could replace the socket. Fix it (chmod o-w ${dir}) or use another socket`);
    }
  }
}

function statOrNull(path: string): Stats | null {
  try {
    return statSync(path);
  } catch {
    return null;
  }
}
