import { spawnSync } from 'node:child_process';

export interface AccountEntry {
  name: string;
  id: number;
}

/**
 * A user or group as the system's resolver sees it (NSS: /etc files, LDAP, sssd, systemd's
 * dynamic users...), through `getent`; null when there is no such entry. Numbers are looked up
 * as ids. Reading /etc/group or /etc/passwd directly would miss every non-file source.
 */
function lookup(database: 'passwd' | 'group', key: string): AccountEntry | null {
  const result = spawnSync('getent', [database, key], { encoding: 'utf8' });
  if (result.error) throw new Error(`cannot run getent to look up ${database} entry "${key}": ${result.error.message}; install libc-bin`);
  if (result.status !== 0) return null; // 2: no such entry
  const [name, , id] = result.stdout.split('\n')[0].split(':');
  return { name, id: Number(id) };
}

export const lookupGroup = (nameOrGid: string) => lookup('group', nameOrGid);
export const lookupUser = (nameOrUid: string) => lookup('passwd', nameOrUid);

/**
 * The group a flag names (`what`: e.g. "socket group"), through the system's resolver; a bare
 * number that names no group is used as a gid. Throws, naming it and the fix, when there is no such group.
 */
export function requireGroup(group: string, what: string, flag: string): AccountEntry {
  const entry = lookupGroup(group);
  if (entry) return entry;
  if (/^\d+$/.test(group)) return { name: group, id: Number(group) };
  throw new Error(`${what} "${group}" does not exist (getent group ${group} finds nothing); create it (groupadd ${group}) or drop ${flag}`);
}
