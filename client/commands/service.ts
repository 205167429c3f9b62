import { spawnSync } from 'node:child_process';
import { accessSync, constants, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir, userInfo } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import type { Command } from 'commander';
import { CliError, ExitCodes, printLines } from './context.js';
import { lookupGroup, lookupUser } from '../../node/account-lookup.js';
import { PACKAGE_ROOT } from '../../node/package-root.js';
import { shebangNodeFlags } from '../../node/shebang-flags.js';

const TEMPLATE_DIR = join(PACKAGE_ROOT, 'systemd');
/** Where the shipped unit files expect the bins; install-service replaces it with the real path. */
const SHIPPED_BIN_DIR = '/usr/bin';
const SERVICE_USER = 'taskhistory';
const SERVICE_HOME = '/var/lib/taskhistory';
/** ProtectHome=yes hides these from the system units. */
const HIDDEN_FROM_SYSTEM_UNITS = ['/home/', '/root/', '/run/user/'];

interface InstallOptions {
  user?: boolean;
  dryRun?: boolean;
  prefix?: string;
}

interface PlannedFile {
  /** Relative to systemd/ in the package. */
  template: string;
  /** Where it is installed, before --prefix is applied. */
  target: string;
}

interface InstallPlan {
  files: (PlannedFile & { content: string })[];
  /** What the user runs afterwards, with the comment lines that explain it. */
  nextSteps: string[];
}

/** Adds `taskhistory install-service [--user] [--dry-run] [--prefix DIR]`. */
export function registerServiceCommands(program: Command): void {
  program
    .command('install-service')
    .description('install the systemd units (system-wide, or for this user with --user), create the service user and print the systemctl commands to run')
    .option('--user', 'install the per-user units for `systemctl --user` instead')
    .option('--dry-run', 'print the files and commands instead of writing or running anything')
    .option('--prefix <dir>', 'write under DIR instead of / (for packaging); creates no user and runs nothing')
    .action((options: InstallOptions) => installService(options));
}

function installService(options: InstallOptions): void {
  const plan = planInstall(Boolean(options.user));
  const root = options.prefix ?? '/';
  if (options.dryRun) {
    for (const file of plan.files) printLines([`# ${join(root, file.target)}`, file.content]);
    if (!options.user && !options.prefix) printLines(['# would run:', ...systemSetupCommands().map((c) => c.join(' '))]);
    printLines(plan.nextSteps);
    return;
  }
  if (!options.user && !options.prefix && process.getuid?.() !== 0) {
    throw new CliError(
      ExitCodes.failure,
      `install-service writes /etc/systemd/system and creates the user ${SERVICE_USER}: run it as root (sudo taskhistory install-service), or pass --user for a daemon of your own`,
    );
  }
  for (const file of plan.files) writeInstalledFile(join(root, file.target), file.content);
  if (!options.user && !options.prefix) {
    for (const command of systemSetupCommands()) runSetupCommand(command);
  }
  if (!options.user) warnIfHiddenFromSystemUnits();
  printLines([`Installed under ${root}:`, ...plan.files.map((file) => `  ${join(root, file.target)}`), '', ...plan.nextSteps]);
}

function planInstall(user: boolean): InstallPlan {
  const files: PlannedFile[] = user
    ? ['taskhistoryd.socket', 'taskhistoryd.service'].map((unit) => ({ template: join('user', unit), target: join(userUnitDir(), unit) }))
    : [
        ...['taskhistoryd.socket', 'taskhistoryd.service', 'taskhistory-cloud.service'].map((unit) => ({
          template: unit,
          target: join('/etc/systemd/system', unit),
        })),
        { template: 'sysusers.d/taskhistory.conf', target: '/etc/sysusers.d/taskhistory.conf' },
        { template: 'tmpfiles.d/taskhistory.conf', target: '/etc/tmpfiles.d/taskhistory.conf' },
      ];
  const rewrite = binRewriter();
  return {
    files: files.map((file) => ({ ...file, content: rewrite(readTemplate(file.template)) })),
    nextSteps: user ? userNextSteps() : systemNextSteps(),
  };
}

function userUnitDir(): string {
  return join(process.env.XDG_CONFIG_HOME || join(homedir(), '.config'), 'systemd', 'user');
}

function readTemplate(name: string): string {
  const path = join(TEMPLATE_DIR, name);
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    throw new CliError(ExitCodes.failure, `cannot read the unit template ${path} (${(error as Error).message}): reinstall the taskhistory package`);
  }
}

/**
 * Points each `ExecStart=/usr/bin/<bin>` (a bin of package.json) at this Node and the package's
 * own script, so the unit depends neither on PATH nor on where npm linked the bins.
 */
function binRewriter(): (text: string) => string {
  const packageJson = join(PACKAGE_ROOT, 'package.json');
  const bins = (JSON.parse(readFileSync(packageJson, 'utf8')) as { bin?: Record<string, string> }).bin ?? {};
  const commands = new Map(
    Object.entries(bins).map(([name, script]) => {
      const path = join(PACKAGE_ROOT, script);
      return [name, [execArg(process.execPath), ...shebangNodeFlags(path), execArg(path)].join(' ')];
    }),
  );
  const execStart = new RegExp(`^ExecStart=${escapeRegExp(SHIPPED_BIN_DIR)}/([\\w.-]+)(?=\\s|$)`, 'gm');
  return (text) => text.replace(execStart, (line, name: string) => (commands.has(name) ? `ExecStart=${commands.get(name)}` : line));
}

/** One ExecStart word: systemd expands % specifiers and $ variables, and splits at spaces. */
function execArg(path: string): string {
  const escaped = path.replaceAll('%', '%%').replaceAll('$', '$$$$');
  return /[\s"'\\]/.test(escaped) ? `"${escaped.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"` : escaped;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function writeInstalledFile(path: string, content: string): void {
  try {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, content, { mode: 0o644 });
  } catch (error) {
    throw new CliError(ExitCodes.failure, `cannot write ${path} (${(error as Error).message}): check that the directory is writable`);
  }
}

/** Creates the service user and the config file: with systemd's own tools, else useradd/groupadd. */
function systemSetupCommands(): string[][] {
  const commands: string[][] = [];
  if (findOnPath('systemd-sysusers')) {
    commands.push(['systemd-sysusers', '/etc/sysusers.d/taskhistory.conf']);
  } else {
    if (!lookupGroup(SERVICE_USER)) commands.push(['groupadd', '--system', SERVICE_USER]);
    if (!lookupUser(SERVICE_USER)) {
      commands.push(['useradd', '--system', '--gid', SERVICE_USER, '--home-dir', SERVICE_HOME, '--no-create-home', '--shell', '/usr/sbin/nologin', SERVICE_USER]);
    }
  }
  commands.push(['systemd-tmpfiles', '--create', '/etc/tmpfiles.d/taskhistory.conf']);
  return commands;
}

function runSetupCommand(command: string[]): void {
  const result = spawnSync(command[0], command.slice(1), { stdio: 'inherit' });
  if (result.error || result.status !== 0) {
    const why = result.error ? result.error.message : `exit status ${result.status}`;
    throw new CliError(ExitCodes.failure, `\`${command.join(' ')}\` failed (${why}); the unit files are in place: run it by hand, then the systemctl commands below`);
  }
}

function findOnPath(tool: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    try {
      accessSync(join(dir, tool), constants.X_OK);
      return join(dir, tool);
    } catch {
      // not in this directory
    }
  }
  return null;
}

function warnIfHiddenFromSystemUnits(): void {
  for (const path of [process.execPath, PACKAGE_ROOT]) {
    if (HIDDEN_FROM_SYSTEM_UNITS.some((hidden) => path.startsWith(hidden))) {
      process.stderr.write(
        `taskhistory: warning: ${path} is under a home or runtime directory, which ProtectHome=yes hides from the system service: install Node and the package system-wide (npm install -g) and run install-service again, or use --user\n`,
      );
    }
  }
}

function systemNextSteps(): string[] {
  return [
    'Now run:',
    '  systemctl daemon-reload',
    '  systemctl enable --now taskhistoryd.socket',
    'Let a user log tasks (takes effect at their next login):',
    `  usermod -aG ${SERVICE_USER} <user>`,
    'Optional, the cloud endpoint (first put the tokens in /etc/taskhistory-cloud/tokens.json, mode 0600):',
    '  systemctl enable --now taskhistory-cloud.service',
    'Logs: journalctl -u taskhistoryd',
  ];
}

function userNextSteps(): string[] {
  return [
    'Now run:',
    '  systemctl --user daemon-reload',
    '  systemctl --user enable --now taskhistoryd.socket',
    'Keep it running while you are logged out (optional):',
    `  loginctl enable-linger ${userInfo().username}`,
    'Logs: journalctl --user -u taskhistoryd',
  ];
}
