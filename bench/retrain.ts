/**
 * What a retraining costs the requests a sidecar serves meanwhile, on a store
 * that holds many closed-loop outcomes: one real sidecar (PostgreSQL, or
 * PGlite without DATABASE_URL) is given BENCH_OUTCOMES choose_prompt +
 * track_execution pairs over 10 experiments and BENCH_TEXTS executions that
 * carry a prompt's text, then asked to `train` while `echo` is sent every
 * 2 ms, one at a time. Reported: how long `train` took, the slowest and the
 * 99th-percentile `echo` answered meanwhile (how long the event loop was
 * held), and how much the sidecar's peak resident memory grew. With
 * BENCH_BASELINE=<another checkout, built> its sidecar runs the same in
 * alternate rounds (BENCH_ROUNDS, default 2), each round on a database of
 * its own.
 *   npm run build && bash scripts/with-services.sh bash -c 'DATABASE_URL=$TEST_DATABASE_URL node dist/bench/retrain.js'
 *   BENCH_BASELINE=/tmp/before ... the same
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { record, type Term, type TermObject } from '../src/codec/terms.js';
import { createDatabase } from '../test/helpers/pg.js';
import { PortClient } from '../test/helpers/portClient.js';
import { alternateRounds } from './rounds.js';

const progress = (m: string): void => void process.stderr.write(`[bench:retrain] ${m}\n`);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-bench-retrain-'));
const OUTCOMES = Number(process.env.BENCH_OUTCOMES ?? 300_000);
const TEXTS = Number(process.env.BENCH_TEXTS ?? 5_000);
const WINDOW = 256;

interface Run {
  trainMs: number;
  echoMaxMs: number;
  echoP99Ms: number;
  echoes: number;
  peakGrowthMb: number;
  samples: number;
}

/** Peak resident memory of a process so far (VmHWM), in MB. */
function peakMb(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m === null ? NaN : Number(m[1]) / 1024;
}

async function must(c: PortClient, op: string, args: TermObject): Promise<TermObject> {
  const r = await c.request(op, args);
  if (!r.ok) throw new Error(`${op}: ${r.reason}: ${r.message}`);
  return r.value as TermObject;
}

/** Runs `n` jobs, `window` at a time. */
async function pipelined(n: number, job: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: WINDOW }, async () => {
      while (next < n) await job(next++);
    }),
  );
}

async function run(root: string): Promise<Run> {
  const db = process.env.DATABASE_URL ? await createDatabase(process.env.DATABASE_URL, 'pe_bench_retrain') : undefined;
  const c = new PortClient({
    command: path.join(root, 'port', 'prompt_engine'),
    env: {
      DATABASE_URL: db?.url ?? '',
      LOG_LEVEL: 'warn',
      NATS_URL: '',
      LLM_URL: '',
      PROMPT_ENGINE_DATA_DIR: fs.mkdtempSync(path.join(tmp, 'data-')),
      PROMPT_ENGINE_RETRAIN_EVERY: '0',
    },
  });
  try {
    await c.ready;
    const t0 = performance.now();
    await pipelined(OUTCOMES, async (i) => {
      const choice = await must(c, 'choose_prompt', record({ experiment: `exp${i % 10}`, prompt: `Label the ticket {ticket} of queue ${i % 10} as billing, bug or other.`, context: record({ model: 'm1' }) }));
      await must(c, 'track_execution', record({ prompt_id: choice.prompt_id as Term, success: (i * 7919) % 100 < 60, execution_time_ms: 1, metadata: choice.metadata as Term }));
      if ((i + 1) % 50_000 === 0) progress(`  ${i + 1} outcomes`);
    });
    await pipelined(TEXTS, (i) =>
      must(c, 'track_execution', record({ prompt_id: `text-${i % 500}`, success: i % 3 === 0, execution_time_ms: 1, metadata: record({ prompt: `Variant ${i % 500}: sort {ticket} into a queue.`, task: `task${i % 7}`, model: 'm1' }) })),
    );
    progress(`  seeded in ${((performance.now() - t0) / 1000).toFixed(0)} s; training`);
    const before = peakMb(c.pid);
    let done = false;
    const started = performance.now();
    const training = must(c, 'train', record({ min_samples: 10, epochs: 3 })).finally(() => (done = true));
    const latencies: number[] = [];
    while (!done) {
      const t = performance.now();
      await must(c, 'echo', record({}));
      latencies.push(performance.now() - t);
      await new Promise((r) => setTimeout(r, 2));
    }
    const trained = await training;
    const trainMs = performance.now() - started;
    latencies.sort((a, b) => a - b);
    const r: Run = {
      trainMs,
      echoMaxMs: latencies.at(-1) ?? NaN,
      echoP99Ms: latencies[Math.floor(latencies.length * 0.99)] ?? NaN,
      echoes: latencies.length,
      peakGrowthMb: peakMb(c.pid) - before,
      samples: Number(trained.samples),
    };
    progress(`  train ${r.trainMs.toFixed(0)} ms (${r.samples} examples), echo max ${r.echoMaxMs.toFixed(1)} ms, p99 ${r.echoP99Ms.toFixed(1)} ms over ${r.echoes}, peak memory +${r.peakGrowthMb.toFixed(0)} MB`);
    return r;
  } finally {
    await c.close();
    await db?.drop();
  }
}

const { rounds, baseline, runs, baseRuns } = await alternateRounds(run, progress, `${process.env.DATABASE_URL ? 'PostgreSQL' : 'PGlite'}, ${OUTCOMES} outcomes, ${TEXTS} executions with a text`, 2);
const f = (n: number, d = 1): string => n.toFixed(d);
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const rows: Array<[string, (r: Run) => number, number]> = [
  ['`train` took, ms', (r) => r.trainMs, 0],
  ['slowest `echo` answered during it, ms', (r) => r.echoMaxMs, 1],
  ['99th percentile `echo` during it, ms', (r) => r.echoP99Ms, 1],
  ['peak resident memory grew, MB', (r) => r.peakGrowthMb, 0],
  ['examples trained on', (r) => r.samples, 0],
];
process.stdout.write(
  [
    `| a retraining beside its serving (${process.env.DATABASE_URL ? 'PostgreSQL' : 'PGlite'}; ${OUTCOMES} loop outcomes, ${TEXTS} executions with a text; median of ${rounds}) | this${baseline === undefined ? '' : ` | baseline (${path.basename(baseline)}) | ratio`} |`,
    `|---|---:${baseline === undefined ? '' : '|---:|---:'}|`,
    ...rows.map(([name, get, d]) => {
      const a = median(runs.map(get));
      if (baseline === undefined) return `| ${name} | ${f(a, d)} |`;
      const b = median(baseRuns.map(get));
      return `| ${name} | ${f(a, d)} | ${f(b, d)} | ${f(a / b, 2)}× |`;
    }),
    '',
  ].join('\n'),
);
fs.rmSync(tmp, { recursive: true, force: true });
