/**
 * Port round trip measured from Erlang: p50/p99 latency of one request at a
 * time and pipelined requests/s of `echo`, for the sidecar and, in the same
 * run, a minimal C echo port with the same framing (bench/c/echo_port.c)
 * and a bare Node echo port (bench/node_echo_port.mjs), rounds alternating.
 *   npm run build && node dist/bench/port.js
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { decode } from '../src/codec/etf.js';
import { REPO_ROOT } from '../src/config.js';
import { Tuple, ErlFloat, type Term } from '../src/codec/terms.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-bench-port-'));
const progress = (m: string): void => void process.stderr.write(`[bench:port] ${m}\n`);

progress('compiling the C baseline and the Erlang driver');
const cEcho = path.join(tmp, 'echo_port');
execFileSync('cc', ['-O2', '-o', cEcho, path.join(REPO_ROOT, 'bench', 'c', 'echo_port.c')]);
execFileSync('erlc', ['-o', tmp, path.join(REPO_ROOT, 'bench', 'erlang', 'port_bench.erl')]);

function run(exe: string, args: string[]): { p50: number; p99: number; rate: number } {
  const out = execFileSync('erl', ['-noshell', '-pa', tmp, '-eval', `port_bench:main(${JSON.stringify([exe, ...args])})`], {
    env: { ...process.env, LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'inherit'],
  }).toString();
  const line = out.split('\n').find((l) => l.startsWith('result '));
  if (line === undefined) throw new Error(`no result from ${exe}: ${out}`);
  const [p50, p99, rate] = (decode(Buffer.from(line.slice(7), 'hex')) as Tuple).items.map((x: Term) => (x instanceof ErlFloat ? x.value : Number(x)));
  return { p50: p50!, p99: p99!, rate: rate! };
}

const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
type Figures = { p50: number; p99: number; rate: number };
const best = (rs: Figures[]): Figures => ({ p50: Math.min(...rs.map((r) => r.p50)), p99: Math.min(...rs.map((r) => r.p99)), rate: Math.max(...rs.map((r) => r.rate)) });
const nodeEcho = path.join(tmp, 'node_echo_port');
fs.writeFileSync(nodeEcho, `#!/bin/sh\nexec "${process.execPath}" "${path.join(REPO_ROOT, 'bench', 'node_echo_port.mjs')}"\n`, { mode: 0o755 });
// Rounds alternate between the three ports, so that a machine that slows down or speeds up
// during the run weighs on each ratio's both sides alike; each figure is the best of its rounds.
const cs: Figures[] = [];
const ns: Figures[] = [];
const ss: Figures[] = [];
for (let r = 1; r <= rounds; r++) {
  progress(`round ${r}/${rounds}: C echo port, Node echo port (no decoding), prompt-engine sidecar`);
  cs.push(run(cEcho, []));
  ns.push(run(nodeEcho, []));
  ss.push(run(path.join(REPO_ROOT, 'port', 'prompt_engine'), ['--port-fds']));
}
const [c, n, s] = [best(cs), best(ns), best(ss)];

const f = (n: number, d = 1): string => n.toFixed(d);
const table = [
  '| port | p50 µs | p99 µs | pipelined req/s |',
  '|---|---:|---:|---:|',
  `| C echo port (baseline) | ${f(c.p50)} | ${f(c.p99)} | ${f(c.rate, 0)} |`,
  `| Node echo port, no decoding (baseline) | ${f(n.p50)} | ${f(n.p99)} | ${f(n.rate, 0)} |`,
  `| prompt-engine sidecar | ${f(s.p50)} | ${f(s.p99)} | ${f(s.rate, 0)} |`,
  `| ratio sidecar / Node echo | ${f(s.p50 / n.p50, 2)}× | ${f(s.p99 / n.p99, 2)}× | ${f(s.rate / n.rate, 2)}× |`,
  `| ratio sidecar / C | ${f(s.p50 / c.p50, 2)}× | ${f(s.p99 / c.p99, 2)}× | ${f(s.rate / c.rate, 2)}× |`,
].join('\n');
process.stdout.write(`${table}\n`);
fs.rmSync(tmp, { recursive: true, force: true });
