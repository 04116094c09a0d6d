/**
 * The closed loop's hot path through the real Port, from Erlang: `choose_prompt`
 * latency with 100 live experiments beside `echo` in the same run, and
 * choose_prompt + track_execution pairs per second pipelined through one
 * sidecar (PGlite, or PostgreSQL when DATABASE_URL is set). With
 * BENCH_BASELINE=<another checkout, built> its sidecar runs in alternate
 * rounds of the same run, and the table gives both (a change's cost). On
 * PostgreSQL every run gets a database of its own on DATABASE_URL's server.
 * BENCH_DECIDER=peer (PostgreSQL): a second sidecar of the same checkout
 * starts first on that database and takes the closed loop's lease, so the
 * sidecar measured only serves, as every sidecar of a pool but one does; the
 * peer's CPU per pair is in the table (it shares this machine's cores).
 *   npm run build && node dist/bench/loopPort.js
 *   BENCH_BASELINE=/tmp/before DATABASE_URL=... node dist/bench/loopPort.js
 */
import path from 'node:path';
import { LoopPortRunner, peerDecides } from './loopPortRun.js';
import { alternateRounds } from './rounds.js';

const progress = (m: string): void => void process.stderr.write(`[bench:loop-port] ${m}\n`);
const runner = new LoopPortRunner(progress);
const run = (root: string): ReturnType<LoopPortRunner['run']> => runner.run(root);
const { rounds, baseline, runs, baseRuns } = await alternateRounds(run, progress, process.env.DATABASE_URL ? 'PostgreSQL' : 'PGlite', 3);
const rs = runs.map((r) => r.figures);
const best = (k: number, max = false): number => (max ? Math.max(...rs.map((r) => r[k]!)) : Math.min(...rs.map((r) => r[k]!)));
const [eP50, eP99, cP50, cP99, rate, echoRate] = [best(0), best(1), best(2), best(3), best(4, true), best(5, true)];
const f = (n: number, d = 1): string => n.toFixed(d);
// CPU of the fastest round: what one pair costs each process, and what that allows on this many cores
const c = runs.reduce((a, b) => (b.figures[4]! > a.figures[4]! ? b : a)).cpu;
const ceiling = (c.cores * 1e6) / c.busy;
process.stdout.write(
  [
    `| through the Port from Erlang (${process.env.DATABASE_URL ? 'PostgreSQL' : 'PGlite'}, 100 live experiments, best of ${rounds}${peerDecides ? '; a peer sidecar decides, the one measured serves' : ''}) | p50 µs | p99 µs |`,
    '|---|---:|---:|',
    `| echo (baseline) | ${f(eP50)} | ${f(eP99)} |`,
    `| choose_prompt | ${f(cP50)} | ${f(cP99)} |`,
    `| ratio choose_prompt / echo | ${f(cP50 / eP50, 2)}× | ${f(cP99 / eP99, 2)}× |`,
    '',
    `| pipelined pairs (${process.env.BENCH_WINDOW ?? 256} in flight, the second request sent when the first is answered) | pairs/s | |`,
    '|---|---:|---:|',
    `| echo + echo (the ceiling of this driver and the Port) | ${f(echoRate, 0)} | |`,
    `| choose_prompt + track_execution | ${f(rate, 0)} | ${f(rate / echoRate, 2)}× of echo pairs |`,
    '',
    `| CPU per choose_prompt + track_execution pair (fastest round, from /proc) | µs |`,
    '|---|---:|',
    `| sidecar (node) | ${f(c.sidecar)} |`,
    `| sidecar (node) per echo + echo pair, for comparison | ${f(c.sidecarEcho)} |`,
    `| driver (this BEAM) | ${f(c.beam)} |`,
    ...(peerDecides ? [`| the peer sidecar that decides (node) | ${f(c.peer)} |`] : []),
    `| postgres (all its processes) | ${f(c.postgres)} |`,
    `| whole machine busy | ${f(c.busy)} |`,
    `| whole machine idle | ${f(c.idle)} |`,
    `| pairs/s if every core were busy at this cost: ${c.cores} cores × 1 s / busy µs per pair | ${f(ceiling, 0)} pairs/s |`,
    ...(baseline === undefined
      ? []
      : (() => {
          const bs = baseRuns.map((r) => r.figures);
          const bBest = (k: number, max = false): number => (max ? Math.max(...bs.map((r) => r[k]!)) : Math.min(...bs.map((r) => r[k]!)));
          const bc = baseRuns.reduce((a, b) => (b.figures[4]! > a.figures[4]! ? b : a)).cpu;
          return [
            '',
            `| this checkout beside the baseline (${path.basename(baseline)}), alternate rounds, best of ${rounds} each | this | baseline | ratio |`,
            '|---|---:|---:|---:|',
            `| echo p50 µs | ${f(eP50)} | ${f(bBest(0))} | ${f(eP50 / bBest(0), 2)}× |`,
            `| choose_prompt p50 µs | ${f(cP50)} | ${f(bBest(2))} | ${f(cP50 / bBest(2), 2)}× |`,
            `| choose_prompt p99 µs | ${f(cP99)} | ${f(bBest(3))} | ${f(cP99 / bBest(3), 2)}× |`,
            `| choose_prompt + track_execution pairs/s | ${f(rate, 0)} | ${f(bBest(4, true), 0)} | ${f(rate / bBest(4, true), 2)}× |`,
            ...(['sidecar', ...(peerDecides ? (['peer'] as const) : []), 'postgres', 'beam', 'busy', 'idle'] as const).map(
              (k) => `| CPU µs per pair, ${k === 'peer' ? 'the deciding peer' : k} (fastest round) | ${f(c[k])} | ${f(bc[k])} | ${bc[k] > 0 ? `${f(c[k] / bc[k], 2)}×` : '-'} |`,
            ),
          ];
        })()),
  ].join('\n') + '\n',
);
runner.close();
