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
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { decode } from '../src/codec/etf.js';
import { REPO_ROOT } from '../src/config.js';
import { ErlFloat, Tuple, record, type Term, type TermObject } from '../src/codec/terms.js';
import { createDatabase } from '../test/helpers/pg.js';
import { PortClient } from '../test/helpers/portClient.js';
import { holdsWithin } from '../test/helpers/poll.js';
import { alternateRounds } from './rounds.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-bench-loop-'));
const progress = (m: string): void => void process.stderr.write(`[bench:loop-port] ${m}\n`);
execFileSync('erlc', ['-o', tmp, path.join(REPO_ROOT, 'bench', 'erlang', 'loop_bench.erl')]);

/** One run: [echoP50, echoP99, chooseP50, chooseP99, pairs/s, echoPairs/s] and CPU µs per pair. */
interface Run {
  figures: number[];
  cpu: { busy: number; idle: number; sidecar: number; beam: number; postgres: number; peer: number; cores: number; sidecarEcho: number };
}
const num = (x: Term): number => (x instanceof ErlFloat ? x.value : Number(x));
const peerDecides = process.env.BENCH_DECIDER === 'peer';
if (peerDecides && !process.env.DATABASE_URL) throw new Error('BENCH_DECIDER=peer needs DATABASE_URL (sidecars share a lease through PostgreSQL)');

/**
 * A sidecar of `root` on `databaseUrl` that holds the closed loop's lease (it decides; the measured one
 * serves); undefined for a checkout without the lease (before the fleet, every sidecar decided for itself).
 */
async function decidingPeer(root: string, databaseUrl: string): Promise<PortClient | undefined> {
  const peer = new PortClient({
    command: path.join(root, 'port', 'prompt_engine'),
    env: { DATABASE_URL: databaseUrl, LOG_LEVEL: 'warn', NATS_URL: '', PROMPT_ENGINE_DATA_DIR: fs.mkdtempSync(path.join(tmp, 'peer-')), LLM_URL: '', PROMPT_ENGINE_RETRAIN_EVERY: '0' },
  });
  await peer.ready;
  // Listing the experiments starts the loop's service, which takes the lease when nobody holds it.
  let deciding: Term | undefined;
  await holdsWithin(async () => {
    await peer.request('experiment', record({}));
    const stats = await peer.request('stats', record({}));
    const loop = stats.ok ? ((stats.value as TermObject).services as TermObject | undefined)?.experiments : undefined;
    deciding = (loop as TermObject | undefined)?.deciding;
    return deciding !== false;
  }, 60_000);
  if (deciding === true) return peer;
  await peer.close();
  if (deciding === false) throw new Error(`the peer sidecar of ${root} did not take the closed loop's lease`);
  progress(`  ${root} has no shared decider: its sidecar decides for itself, no peer`);
  return undefined;
}

/** One run of `root`'s sidecar; on PostgreSQL in a database of its own (no run pays for another's rows or schema). */
async function run(root: string): Promise<Run> {
  const dataDir = fs.mkdtempSync(path.join(tmp, 'data-'));
  const db = process.env.DATABASE_URL ? await createDatabase(process.env.DATABASE_URL, 'pe_bench_loop_port') : undefined;
  const peer = peerDecides && db !== undefined ? await decidingPeer(root, db.url) : undefined;
  try {
    const out = execFileSync('erl', ['-noshell', '-pa', tmp, '-eval', `loop_bench:main(${JSON.stringify([path.join(root, 'port', 'prompt_engine'), '--port-fds'])})`], {
      env: {
        ...process.env,
        ...(db === undefined ? {} : { DATABASE_URL: db.url }),
        ...(peer === undefined ? {} : { BENCH_PEER_PID: String(peer.pid) }),
        LOG_LEVEL: 'warn',
        PROMPT_ENGINE_DATA_DIR: dataDir,
        LLM_URL: '',
        PROMPT_ENGINE_RETRAIN_EVERY: '0',
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    }).toString();
    const line = out.split('\n').find((l) => l.startsWith('result '));
    if (line === undefined) throw new Error(`no result: ${out}`);
    const items = (decode(Buffer.from(line.slice(7), 'hex')) as Tuple).items;
    const [busy, idle, sidecar, beam, postgres, peerCpu, cores] = (items[6] as Tuple).items.map(num) as [number, number, number, number, number, number, number];
    const r = { figures: items.slice(0, 6).map(num), cpu: { busy, idle, sidecar, beam, postgres, peer: peerCpu, cores, sidecarEcho: num(items[7]!) } };
    progress(`  ${Math.round(r.figures[4]!)} choose + track pairs/s`);
    return r;
  } finally {
    await peer?.close();
    await db?.drop();
  }
}

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
fs.rmSync(tmp, { recursive: true, force: true });
