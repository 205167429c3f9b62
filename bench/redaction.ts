import { seededRandom } from '../node/seeded-random.js';
import { BUILTIN_REDACTION_RULES, redactText, redactValue } from '../protocol/redaction.js';
import { median } from './stats.js';
import { outputText } from './workload.js';

/**
 * Micro-benchmark of redaction on the hot path (every field of every step passes through it):
 * CPU time per field for the shapes a daemon sees most, built-in rules only. CPU time, not wall
 * time: on a machine shared with other work, preemption would otherwise swamp the figures.
 * Run: `npm run build && node dist/bench/redaction.js`.
 */
const ROUNDS = 7;
const TARGET_MS_PER_ROUND = 200;

const random = seededRandom(11);
const LOG_LINE = 'INFO 2025-01-01T00:00:00Z GET https://registry.example.com/api/v1/items?page=3 200 OK in 12 ms\n';

const FIELDS: Record<string, () => unknown> = {
  'command, 13 B': () => redactText('npm run build', BUILTIN_REDACTION_RULES),
  'output 1 KiB, bench words (has "passed")': (() => {
    const text = outputText(random, 1024);
    return () => redactText(text, BUILTIN_REDACTION_RULES);
  })(),
  'output 1 KiB, no candidate': (() => {
    const text = outputText(random, 4096).replace(/passed|token|secret/g, 'ok').slice(0, 1024);
    return () => redactText(text, BUILTIN_REDACTION_RULES);
  })(),
  'output 64 KiB, log lines with URLs': (() => {
    const text = LOG_LINE.repeat(Math.ceil(65536 / LOG_LINE.length)).slice(0, 65536);
    return () => redactText(text, BUILTIN_REDACTION_RULES);
  })(),
  'output 1 KiB with one password=': (() => {
    const text = `${outputText(random, 1000)}\npassword=hunter2`;
    return () => redactText(text, BUILTIN_REDACTION_RULES);
  })(),
  'plan, 20 commands and an env object': (() => {
    const plan = [...Array.from({ length: 20 }, (_, i) => `npm run step-${i}`), { env: { HOME: '/home/me', PGHOST: 'db', PGPASSWORD: 'x' } }];
    return () => redactValue(plan, BUILTIN_REDACTION_RULES);
  })(),
};

function cpuMs(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

function timePerCall(run: () => unknown): number {
  let calls = 1;
  for (;;) {
    const start = cpuMs();
    for (let i = 0; i < calls; i++) run();
    const elapsed = cpuMs() - start;
    if (elapsed >= TARGET_MS_PER_ROUND) return elapsed / calls;
    calls *= elapsed < TARGET_MS_PER_ROUND / 10 ? 10 : 2;
  }
}

console.log(`redaction, ${BUILTIN_REDACTION_RULES.length} built-in rules, median of ${ROUNDS} rounds`);
for (const [name, run] of Object.entries(FIELDS)) {
  timePerCall(run); // warm up
  const perCallMs = median(Array.from({ length: ROUNDS }, () => timePerCall(run)));
  console.log(`${name.padEnd(44)} ${(perCallMs * 1000).toFixed(2).padStart(9)} µs CPU`);
}
