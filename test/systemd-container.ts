import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, realpathSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { spawnTracked, waitFor, type Spawned } from './processes.js';

/**
 * A real systemd as PID 1 of a systemd-nspawn container: a minimal Debian debootstrapped once
 * and cached, booted with a throw-away overlay, this machine's node and the package bind-mounted
 * read-only at their own paths, driven through nsenter.
 */

const ROOTFS_CACHE_DIR = '/var/tmp/taskhistory-systemd-root';
/** Names the cached tree; change it when the suite or the package list changes, so a fresh one is built. */
const ROOTFS_VERSION = 'bookworm-systemd-1';
const SUITE = 'bookworm';
const PACKAGES = 'systemd,systemd-sysv,dbus';
const TOOLS = ['systemd-nspawn', 'debootstrap', 'nsenter'];
/**
 * Where node and the package appear inside: neutral paths, since the system units hide /home,
 * /root (ProtectHome=) and /tmp, /var/tmp (PrivateTmp=), where a clone may well live.
 */
export const NODE_INSIDE = '/usr/local/bin/node';
export const PACKAGE_INSIDE = '/opt/taskhistory';
/** Commands inside see only this, not the test's environment. */
const CONTAINER_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', LANG: 'C.UTF-8' };

export interface CommandResult {
  status: number | null;
  stdout: string;
  stderr: string;
  output: string;
}

function run(command: string, args: string[], timeoutMs = 120_000): CommandResult {
  const result = spawnSync(command, args, { encoding: 'utf8', env: CONTAINER_ENV, timeout: timeoutMs });
  const stdout = result.stdout ?? '';
  const stderr = `${result.stderr ?? ''}${result.error ? `\n${result.error.message}` : ''}`;
  return { status: result.status, stdout, stderr, output: `${stdout}${stderr}` };
}

function onPath(tool: string): boolean {
  return run('sh', ['-c', `command -v ${tool}`]).status === 0;
}

/** Why this machine cannot run a container at all (the only reasons to skip), or null. */
export function whyNoContainers(): string | null {
  if (process.getuid?.() !== 0) return 'booting a systemd container needs root';
  const unshare = run('unshare', ['--pid', '--mount', '--uts', '--ipc', '--net', '--fork', 'true']);
  if (unshare.status !== 0) return `this machine cannot create pid/mount/uts/ipc/net namespaces (unshare: ${unshare.output.trim()})`;
  return null;
}

/** The tools the container needs and the machine lacks; .ci/run installs them. */
export function missingTools(): string[] {
  return TOOLS.filter((tool) => !onPath(tool));
}

/** The Debian mirror apt uses here (deb822 `URIs:` or one-line `deb URI SUITE main`), for debootstrap. */
function aptMirror(): string {
  const files = ['/etc/apt/sources.list', ...readdirOrEmpty('/etc/apt/sources.list.d').map((name) => join('/etc/apt/sources.list.d', name))];
  for (const file of files.filter((path) => /\.(list|sources)$/.test(path) && existsSync(path))) {
    const text = readFileSync(file, 'utf8');
    for (const line of text.split('\n')) {
      const oneLine = /^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+.*\bmain\b/.exec(line);
      if (oneLine && oneLine[2] === SUITE) return oneLine[1];
    }
    for (const stanza of text.split(/\n\s*\n/)) {
      const field = (name: string) => new RegExp(`^${name}:\\s*(.+)$`, 'mi').exec(stanza)?.[1].trim().split(/\s+/) ?? [];
      if (field('Types').includes('deb') && field('Suites').includes(SUITE) && field('Components').includes('main')) return field('URIs')[0];
    }
  }
  throw new Error(`no "${SUITE} main" Debian mirror in /etc/apt/sources.list or /etc/apt/sources.list.d/; debootstrap needs one`);
}

function readdirOrEmpty(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** Past this a debootstrap is taken as stuck (it takes one to two minutes; far longer on a loaded machine). */
const DEBOOTSTRAP_TIMEOUT_MS = 15 * 60_000;

/** The cached root tree, debootstrapped on first use (250 MB). */
export async function minimalDebianRoot(): Promise<string> {
  const root = join(ROOTFS_CACHE_DIR, ROOTFS_VERSION);
  if (existsSync(root)) return root;
  mkdirSync(ROOTFS_CACHE_DIR, { recursive: true });
  // Built aside and renamed into place, so an interrupted build is never taken for a finished one.
  const partial = `${root}.partial-${process.pid}`;
  const debootstrap = spawnTracked('debootstrap', ['--variant=minbase', `--include=${PACKAGES}`, SUITE, partial, aptMirror()], { env: CONTAINER_ENV });
  const timer = setTimeout(() => process.kill(debootstrap.pid, 'SIGKILL'), DEBOOTSTRAP_TIMEOUT_MS);
  const { code, signal } = await debootstrap.exited;
  clearTimeout(timer);
  if (code !== 0) {
    rmSync(partial, { recursive: true, force: true });
    throw new Error(`debootstrap of ${SUITE} into ${partial} failed (${signal ?? `exit ${code}`}):\n${(debootstrap.stdout() + debootstrap.stderr()).slice(-3000)}`);
  }
  try {
    renameSync(partial, root);
  } catch (error) {
    rmSync(partial, { recursive: true, force: true }); // another run finished first: use its tree
    if (!existsSync(root)) throw error;
  }
  return root;
}

/** The shared libraries of the host's node that the container lacks at the same path. */
function nodeLibrariesMissingIn(root: string): string[] {
  const libraries = [...run('ldd', [realpathSync(process.execPath)]).stdout.matchAll(/(\/\S+) \(0x/g)].map((match) => match[1]);
  return libraries.filter((file) => !existsSync(join(root, file)));
}

function parentPid(pid: string): number | null {
  try {
    // The comm field may hold spaces and parentheses: the ppid is the second field after the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return null;
  }
}

function pidNamespace(pid: number | string): string | null {
  try {
    return readlinkSync(`/proc/${pid}/ns/pid`);
  } catch {
    return null;
  }
}

export class SystemdContainer {
  private constructor(
    readonly nspawn: Spawned,
    /** systemd, PID 1 inside: nspawn's child in another pid namespace. */
    readonly leader: number,
  ) {}

  /** Boots `root` with node and `packageDir` at NODE_INSIDE and PACKAGE_INSIDE, and waits until systemd is running. */
  static async boot(root: string, packageDir: string): Promise<SystemdContainer> {
    const binds = [
      `--bind-ro=${realpathSync(process.execPath)}:${NODE_INSIDE}`,
      `--bind-ro=${packageDir}:${PACKAGE_INSIDE}`,
      ...nodeLibrariesMissingIn(root).map((library) => `--bind-ro=${library}`),
    ];
    const nspawn = spawnTracked(
      'systemd-nspawn',
      ['-q', '-D', root, '-b', '--register=no', '--keep-unit', '--volatile=overlay', '--console=passive', ...binds],
      { env: CONTAINER_ENV },
    );
    const ourNamespace = pidNamespace(process.pid);
    const leader = await waitFor(
      () => {
        if (nspawn.proc.exitCode !== null) throw new Error(`systemd-nspawn exited ${nspawn.proc.exitCode}:\n${nspawn.stdout()}${nspawn.stderr()}`);
        const child = readdirSync('/proc').find((pid) => /^\d+$/.test(pid) && parentPid(pid) === nspawn.pid);
        const namespace = child && pidNamespace(child);
        return namespace && namespace !== ourNamespace ? Number(child) : null;
      },
      60_000,
      "systemd-nspawn's child in a pid namespace of its own",
    );
    const container = new SystemdContainer(nspawn, leader);
    await waitFor(() => existsSync(`/proc/${leader}/root/run/systemd/private`), 60_000, 'systemd in the container to open /run/systemd/private');
    const state = container.exec(['systemctl', 'is-system-running', '--wait'], { timeoutMs: 120_000 });
    if (!['running', 'degraded'].includes(state.stdout.trim())) throw new Error(`the container's systemd did not come up: ${state.output}`);
    return container;
  }

  /** Runs a command inside, as root or, with `user`, as that user with their groups. */
  exec(command: string[], options: { user?: string; timeoutMs?: number } = {}): CommandResult {
    const asUser = options.user ? ['setpriv', `--reuid=${options.user}`, `--regid=${options.user}`, '--init-groups', 'env', `HOME=/home/${options.user}`] : [];
    return run('nsenter', ['-t', String(this.leader), '-a', ...asUser, ...command], options.timeoutMs);
  }

  /** Like exec, but a non-zero exit fails with the command's output. */
  check(command: string[], options: { user?: string; timeoutMs?: number } = {}): string {
    const result = this.exec(command, options);
    if (result.status !== 0) throw new Error(`${options.user ?? 'root'}: ${command.join(' ')} exited ${result.status}:\n${result.output}`);
    return result.stdout;
  }

  /** `systemctl show -p ...` of a unit as an object. */
  unitProperties(unit: string, names: string[]): Record<string, string> {
    const text = this.check(['systemctl', 'show', unit, ...names.map((name) => `--property=${name}`)]);
    return Object.fromEntries(text.trim().split('\n').map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]));
  }

  /** Powers the container off through nspawn (SIGTERM: a clean shutdown), then SIGKILL if it lingers. */
  async stop(): Promise<void> {
    if (this.nspawn.proc.exitCode !== null || this.nspawn.proc.signalCode !== null) return;
    process.kill(this.nspawn.pid, 'SIGTERM');
    const timeout = setTimeout(() => process.kill(this.nspawn.pid, 'SIGKILL'), 30_000);
    await this.nspawn.exited;
    clearTimeout(timeout);
  }
}
