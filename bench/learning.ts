/**
 * Scoring throughput (prompts/s) through onnxruntime-node in batches of 1,
 * 10 and 100 beside the TypeScript forward pass of the same model (both
 * including featurization), training time for the whole multiprompt history
 * and for 100k synthetic executions, and memory. With BENCH_BASELINE=<another
 * checkout, built> its MLP (dist/src/learning/mlp.js) trains the shipped
 * ranking member on the same examples in alternate rounds of the same run
 * (each in a worker thread of its own), and forward-passes the same inputs: the seconds of each, the ratio, and
 * whether both trained the same weights bit for bit.
 *   npm run build && node dist/bench/learning.js
 *   BENCH_BASELINE=/tmp/before BENCH_ROUNDS=2 node dist/bench/learning.js
 */
import { Worker } from 'node:worker_threads';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { REPO_ROOT } from '../src/config.js';
import { featureDim, featurize, FEATURE_SPEC } from '../src/learning/features.js';
import { readModel } from '../src/learning/modelFile.js';
import { predictAll, seeded, trainMlp, type Example } from '../src/learning/mlp.js';
import { loadCells } from '../src/learning/offline/multiprompt.js';
import { readOnnxWeights } from '../src/learning/onnx.js';
import { Scorer } from '../src/learning/scorer.js';
import { cellExample, examplesOf } from '../src/learning/offline/evaluation.js';
import { RANKING_DEFAULTS } from '../src/learning/ranker.js';

const progress = (m: string): void => void process.stderr.write(`[bench:learning] ${m}\n`);
const { onnx, meta } = readModel(path.join(REPO_ROOT, 'models', 'default.onnx'));
const scorer = await Scorer.load(onnx, meta);
const weights = readOnnxWeights(onnx);
const cells = loadCells();
const items = cells.slice(0, 2000).map((c) => ({ prompt: c.template, context: { model: c.model, task: c.task } }));

async function rate(batch: number, f: (xs: typeof items) => Promise<unknown> | unknown, ms = 1500): Promise<number> {
  let n = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < ms) {
    const start = (n * batch) % (items.length - batch);
    await f(items.slice(start, start + batch));
    n++;
  }
  return (n * batch) / ((performance.now() - t0) / 1000);
}

const rows: string[] = [];
for (const b of [1, 10, 100]) {
  progress(`scoring, batch ${b}`);
  const ort = await rate(b, (xs) => scorer.score(xs));
  const ts = await rate(b, (xs) => predictAll(weights, xs.map((x) => featurize(x.prompt, x.context))));
  rows.push(`| ${b} | ${Math.round(ort).toLocaleString('en-US')} | ${Math.round(ts).toLocaleString('en-US')} | ${(ort / ts).toFixed(2)}× |`);
}

progress(`training on the whole multiprompt history (${cells.length} cells), 12 epochs max`);
const ex = cells.map((c) => cellExample(c));
const rnd = seeded(1);
const split = (xs: Example[]) => {
  const tr: Example[] = [];
  const va: Example[] = [];
  for (const e of xs) (rnd() < 0.1 ? va : tr).push(e);
  return [tr, va] as const;
};
let t0 = performance.now();
const [tr, va] = split(ex);
const full = trainMlp(tr, va, featureDim(FEATURE_SPEC), { epochs: 12, seed: 42 });
const fullS = (performance.now() - t0) / 1000;

progress('training on 100,000 synthetic executions (one row each), 5 epochs');
const words = 'answer explain list choose exactly word sentence briefly step reason options format json plausible'.split(' ');
const synth: Example[] = Array.from({ length: 100_000 }, (_, i) => {
  const p = Array.from({ length: 8 + (i % 20) }, (_, k) => words[(i * 7 + k * 3) % words.length]).join(' ');
  const good = p.includes('exactly') && p.includes('format');
  return { x: featurize(p, { model: `m${i % 7}`, task: `t${i % 11}` }), y: good ? (rnd() < 0.8 ? 1 : 0) : rnd() < 0.3 ? 1 : 0, w: 1 };
});
t0 = performance.now();
const [str, sva] = split(synth);
trainMlp(str, sva, featureDim(FEATURE_SPEC), { epochs: 5, seed: 42, patience: 10 });
const synthS = (performance.now() - t0) / 1000;
const mem = process.memoryUsage();

/**
 * One checkout's MLP in a worker thread of its own (its compiled code sees only
 * these inputs, as in the trainer's worker): the shipped ranking member's
 * training, then forward passes over every input.
 */
const MLP_ROUND = `
const { workerData, parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
import(workerData.mlpUrl).then((m) => {
  let t = performance.now();
  const r = m.trainMlp(workerData.tr, workerData.va, workerData.input, workerData.options);
  const secs = (performance.now() - t) / 1000;
  const h = createHash('sha256');
  for (const a of [r.weights.w1, r.weights.b1, r.weights.w2, r.weights.b2, r.weights.w3, r.weights.b3]) h.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  t = performance.now();
  for (let k = 0; k < 3; k++) m.predictAll(r.weights, workerData.xs);
  parentPort.postMessage({ secs, epochs: r.epochs, hash: h.digest('hex'), fwd: (3 * workerData.xs.length) / ((performance.now() - t) / 1000) });
});
`;

/** This checkout's MLP beside a baseline's, on the same inputs, in alternate rounds. */
async function beside(root: string): Promise<string[]> {
  // the shipped ranking member (trainMember's options) on the whole history, its validation split seeded
  const [tr, va] = split(examplesOf(cells));
  const xs = ex.map((e) => e.x);
  const data = { tr, va, xs, input: featureDim(FEATURE_SPEC), options: { ...RANKING_DEFAULTS, seed: 42 } };
  const round = (mlpPath: string): Promise<{ secs: number; epochs: number; hash: string; fwd: number }> =>
    new Promise((resolve, reject) => {
      const w = new Worker(MLP_ROUND, { eval: true, workerData: { ...data, mlpUrl: pathToFileURL(mlpPath).href } });
      w.once('message', (m: { secs: number; epochs: number; hash: string; fwd: number }) => void w.terminate().then(() => resolve(m)));
      w.once('error', reject);
    });
  const rounds = Number(process.env.BENCH_ROUNDS ?? 2);
  const runs = { this: [] as Array<{ secs: number; fwd: number; hash: string }>, base: [] as Array<{ secs: number; fwd: number; hash: string }> };
  for (let i = 0; i < rounds; i++) {
    for (const [name, dir] of [['this', REPO_ROOT], ['base', root]] as const) {
      progress(`round ${i + 1}/${rounds}: the ranking member with ${name === 'this' ? 'this checkout' : root}'s MLP, in a worker thread`);
      const r = await round(path.join(dir, 'dist', 'src', 'learning', 'mlp.js'));
      runs[name].push(r);
      progress(`  ${r.secs.toFixed(1)} s, ${r.epochs} epochs (best); forward ${Math.round(r.fwd).toLocaleString('en-US')} inputs/s`);
    }
  }
  const med = (a: number[]): number => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
  const [secs, fwd] = [(n: 'this' | 'base') => med(runs[n].map((r) => r.secs)), (n: 'this' | 'base') => med(runs[n].map((r) => r.fwd))];
  const same = new Set([...runs.this, ...runs.base].map((r) => r.hash)).size === 1;
  return [
    '',
    `beside ${root} (${rounds} rounds each, alternating, each in a worker thread of its own; medians):`,
    '',
    '| | this | baseline | ratio |',
    '|---|---:|---:|---:|',
    `| training the ranking member, whole history (${tr.length.toLocaleString('en-US')} examples), s | ${secs('this').toFixed(1)} | ${secs('base').toFixed(1)} | ${(secs('base') / secs('this')).toFixed(2)}× faster |`,
    `| TS forward pass, inputs/s (${xs.length.toLocaleString('en-US')} inputs, featurized once) | ${Math.round(fwd('this')).toLocaleString('en-US')} | ${Math.round(fwd('base')).toLocaleString('en-US')} | ${(fwd('this') / fwd('base')).toFixed(2)}× |`,
    '',
    `the same weights bit for bit in every round: ${same ? 'yes' : 'NO'}`,
  ];
}
const besideRows = process.env.BENCH_BASELINE === undefined ? [] : await beside(process.env.BENCH_BASELINE);

process.stdout.write(
  [
    '| batch | onnxruntime prompts/s | TS forward prompts/s | ratio |',
    '|---:|---:|---:|---:|',
    ...rows,
    '',
    '| training | examples | epochs run | seconds |',
    '|---|---:|---:|---:|',
    `| whole multiprompt history (one weighted example per cell) | ${ex.length.toLocaleString('en-US')} | ${full.epochs} (best) | ${fullS.toFixed(1)} |`,
    `| 100k synthetic executions (one row each) | 100,000 | 5 | ${synthS.toFixed(1)} |`,
    '',
    `memory after both: rss ${(mem.rss / 2 ** 20).toFixed(0)} MiB, heap used ${(mem.heapUsed / 2 ** 20).toFixed(0)} MiB (model file ${(onnx.length / 1024).toFixed(0)} KiB)`,
    ...besideRows,
  ].join('\n') + '\n',
);
await scorer.close();
