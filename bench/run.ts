/**
 * Every hot-path figure of BENCHMARKS.md in one run, each beside its baseline:
 * the codec (vs erlang_js and JSON), the Port (vs a C and a bare Node echo port),
 * NATS (vs a bare nats.js responder), tracking writes (vs raw COPY / per-row
 * INSERT), and the closed loop's choose_prompt + track_execution through the
 * Port (vs echo), on PostgreSQL and on PGlite, and the same with the dashboard open (vs without);
 * the pairs' rate on PostgreSQL at several numbers in flight, in steady state, beside a
 * baseline checkout when BENCH_BASELINE names one. One after another, so they do not compete for
 * the 2 cores; each table also goes to bench/results/<name>.md.
 *   npm run bench        (= build, then scripts/with-services.sh node dist/bench/run.js)
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from '../src/config.js';

const progress = (m: string): void => void process.stderr.write(`[bench] ${m}\n`);
const results = path.join(REPO_ROOT, 'bench', 'results');
fs.mkdirSync(results, { recursive: true });

const runs: Array<{ name: string; script: string; env?: NodeJS.ProcessEnv }> = [
  { name: 'codec', script: 'codec.js' },
  { name: 'port', script: 'port.js' },
  { name: 'nats', script: 'nats.js' },
  { name: 'store', script: 'store.js' },
  { name: 'loop-port-postgres', script: 'loopPort.js', env: { DATABASE_URL: process.env.TEST_DATABASE_URL ?? '' } },
  { name: 'loop-port-pglite', script: 'loopPort.js', env: { DATABASE_URL: '' } },
  { name: 'loop-saturation-postgres', script: 'loopSaturation.js', env: { DATABASE_URL: process.env.TEST_DATABASE_URL ?? '' } },
  { name: 'dashboard', script: 'dashboard.js' },
];
const only = process.argv.slice(2);
const stamp = new Date().toISOString().slice(0, 16).replace('T', ' ');
for (const r of runs) {
  if (only.length > 0 && !only.includes(r.name)) continue;
  progress(`${r.name} …`);
  const out = execFileSync(process.execPath, [path.join(REPO_ROOT, 'dist', 'bench', r.script)], { env: { ...process.env, ...r.env }, stdio: ['ignore', 'pipe', 'inherit'] }).toString();
  fs.writeFileSync(path.join(results, `${r.name}.md`), `<!-- ${stamp} UTC, node dist/bench/${r.script} -->\n${out}`);
  process.stdout.write(`\n## ${r.name}\n\n${out}`);
}
