/**
 * The closed loop's hot path with more in flight: choose_prompt + track_execution
 * pairs per second through one Port sidecar, in steady state (200,000 untimed
 * pairs, then 200,000 timed), at several numbers of pairs in flight
 * (BENCH_WINDOWS, default 256,512,1024,2048), each with the time a pair takes
 * (its choice sent to its track answered) and what each process spends on it.
 * A sidecar's most pairs/s may need more in flight than loopPort.ts's 256
 * after a short warm-up, where the machine still idles (BENCHMARKS.md). Each
 * run gets a fresh sidecar and a database of its own; with
 * BENCH_BASELINE=<another checkout, built> its sidecar runs in alternate
 * rounds. Figures are the median round of BENCH_ROUNDS (3), with the slowest
 * and fastest beside it.
 *   npm run build && BENCH_BASELINE=/tmp/before DATABASE_URL=... node dist/bench/loopSaturation.js
 */
import path from 'node:path';
import { LoopPortRunner, type Run } from './loopPortRun.js';
import { alternateRounds } from './rounds.js';

const progress = (m: string): void => void process.stderr.write(`[bench:loop-saturation] ${m}\n`);
const windows = (process.env.BENCH_WINDOWS ?? '256,512,1024,2048').split(',').map((w) => Number(w));
if (windows.some((w) => !Number.isInteger(w) || w < 1)) throw new Error(`BENCH_WINDOWS must list positive integers, got ${process.env.BENCH_WINDOWS}`);
const steady = {
  BENCH_PAIRS: process.env.BENCH_PAIRS ?? '200000',
  BENCH_WARMUP_PAIRS: process.env.BENCH_WARMUP_PAIRS ?? '200000',
  // The one-at-a-time latencies and the echo pairs are loopPort.ts's; here only as long as the driver needs.
  BENCH_SEQ: '500',
  BENCH_ECHO_PAIRS: '20000',
};
const backend = process.env.DATABASE_URL ? 'PostgreSQL' : 'PGlite';
const runner = new LoopPortRunner(progress);

const rate = (r: Run): number => r.figures[4]!;
/** The round of median throughput (the lower middle of an even count). */
const median = (rs: Run[]): Run => [...rs].sort((a, b) => rate(a) - rate(b))[(rs.length - 1) >> 1]!;
const f = (n: number, d = 0): string => n.toFixed(d);
const spread = (rs: Run[]): string => `${f(rate(median(rs)))} (${f(Math.min(...rs.map(rate)))}–${f(Math.max(...rs.map(rate)))})`;

const rows: string[] = [];
let baseline: string | undefined;
let rounds = 0;
const peaks: Array<{ window: number; rate: number; base?: number }> = [];
for (const window of windows) {
  const r = await alternateRounds((root) => runner.run(root, { ...steady, BENCH_WINDOW: String(window) }), progress, `${backend}, ${window} in flight`, 3);
  ({ baseline, rounds } = r);
  const m = median(r.runs);
  const base = r.baseRuns.length > 0 ? median(r.baseRuns) : undefined;
  peaks.push({ window, rate: rate(m), ...(base === undefined ? {} : { base: rate(base) }) });
  rows.push(
    `| ${window} | ${spread(r.runs)} | ${f(m.pair.p50 / 1000, 1)} / ${f(m.pair.p99 / 1000, 1)} | ${f(m.cpu.sidecar, 1)} / ${f(m.cpu.postgres, 1)} / ${f(m.cpu.beam, 1)} / ${f(m.cpu.idle, 1)} |` +
      (base === undefined ? '' : ` ${spread(r.baseRuns)} | ${f(base.pair.p50 / 1000, 1)} / ${f(base.pair.p99 / 1000, 1)} | ${f(rate(m) / rate(base), 2)}× |`),
  );
}
runner.close();
const best = peaks.reduce((a, b) => (b.rate > a.rate ? b : a));
process.stdout.write(
  [
    `| pairs in flight (${backend}, 100 live experiments, ${steady.BENCH_PAIRS} timed pairs after ${steady.BENCH_WARMUP_PAIRS}, median of ${rounds} rounds) | pairs/s, median (slowest–fastest) | a pair's time p50 / p99 ms | CPU µs a pair: sidecar / postgres / driver / machine idle |` +
      (baseline === undefined ? '' : ` baseline (${path.basename(baseline)}) pairs/s | baseline pair p50 / p99 ms | ratio of medians |`),
    `|---:|---:|---:|---:|${baseline === undefined ? '' : '---:|---:|---:|'}`,
    ...rows,
    '',
    `The most pairs/s (median round): ${f(best.rate)} at ${best.window} in flight` +
      (baseline === undefined ? '.' : `; the baseline's most: ${f(Math.max(...peaks.map((p) => p.base ?? 0)))} pairs/s.`),
  ].join('\n') + '\n',
);
