import { join } from 'node:path';
import { REPO } from '../daemon-harness.js';
import { spawnTracked } from '../processes.js';

export const PYTHON_CLIENT_DIR = join(REPO, 'client', 'python');
export const PYTHON_TEST_DIR = join(REPO, 'test', 'python');

export interface PythonRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs python3 with `args` (a script and its arguments, or `-c CODE`) and only `pythonPath` importable,
 * so a test proves which module an import really resolved to.
 */
export async function runPython(args: string[], pythonPath: string[], env: NodeJS.ProcessEnv = {}): Promise<PythonRun> {
  const child = spawnTracked('python3', args, {
    env: { ...process.env, PYTHONPATH: pythonPath.join(':'), PYTHONDONTWRITEBYTECODE: '1', PYTHONIOENCODING: 'utf-8', ...env },
  });
  // 'close' (not 'exit') fires once stdout and stderr are fully read.
  await new Promise((resolve) => child.proc.once('close', resolve));
  const { code } = await child.exited;
  return { code, stdout: child.stdout(), stderr: child.stderr() };
}

/** The JSON a script printed as its last stdout line; fails with the script's stderr otherwise. */
export function lastJsonLine(run: PythonRun): any {
  const lines = run.stdout.trim().split('\n');
  try {
    return JSON.parse(lines[lines.length - 1]);
  } catch {
    throw new Error(`python printed no JSON (exit ${run.code}):\nstdout: ${run.stdout}\nstderr: ${run.stderr}`);
  }
}
