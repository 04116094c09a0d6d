/**
 * The scorer as a ranker: what the engine asks is "which of these prompts,
 * for this model, on this task", so the network is trained for the order of
 * prompts within a (task, model) group, not for the group's difficulty.
 *
 *  1. ranking members: MLPs trained with a pairwise (RankNet) loss on the
 *     rank-normal targets within each group (seeds seed, seed+1, …);
 *  2. a difficulty head: a small MLP on the context inputs only (model,
 *     task, …), trained on P(success) — constant within a group, so it
 *     cannot change any order;
 *  3. calibration: P = σ(a·mean member logit + difficulty logit + b), a > 0
 *     and b fitted by log-loss on the training examples.
 *
 * All of it is stacked into one network of the same form (Gemm → Relu →
 * Gemm → Relu → Gemm → Sigmoid), so export, serving and the parity test are
 * unchanged. The output is a P(success) for use as a weak prior; within a
 * group its order is the ranking members' order.
 */
import { contextBlock, featureDim, featurize, FEATURE_SPEC, type FeatureSpec, type SparseVec } from './features.js';
import { logit, seeded, trainMlp, type Example, type MlpWeights, type TrainOptions } from './mlp.js';

export interface RankerOptions extends TrainOptions {
  /** ranking members (seeds seed … seed+ensemble−1), default 3 */
  ensemble?: number;
  /** share of the examples held out (per member seed) for early stopping; default 0.1 */
  valFraction?: number;
  spec?: FeatureSpec;
}

/** Ranking defaults: pairwise loss on rank-normal targets, patience 2 (the best epoch comes early). */
export const RANKING_DEFAULTS: TrainOptions = { loss: 'pairwise', targets: 'rank', patience: 2, epochs: 12 };

/** Options of the shipped model (`npm run train:default`) and of the evaluation the test suite asserts. */
export const SHIPPED_OPTIONS: RankerOptions = { seed: 42, ensemble: 3 };

/** One ranking member: its own validation split and seed. */
export function trainMember(examples: Example[], seed: number, o: RankerOptions = {}): { weights: MlpWeights; epochs: number } {
  const rnd = seeded(seed + 7919);
  const train: Example[] = [];
  const val: Example[] = [];
  for (const e of examples) (rnd() < (o.valFraction ?? 0.1) ? val : train).push(e);
  const r = trainMlp(train, val, featureDim(o.spec ?? FEATURE_SPEC), { ...RANKING_DEFAULTS, ...o, seed });
  return { weights: r.weights, epochs: r.epochs };
}

/**
 * The difficulty head: P(success) from the context inputs alone (one value per
 * group). Trained on the pooled rate of each context and, when the contexts
 * are given, of each model alone (what it answers for a task it never saw).
 */
export function trainDifficulty(examples: Example[], seed: number, spec: FeatureSpec = FEATURE_SPEC, contexts?: Array<Record<string, string>>): MlpWeights {
  const [lo, hi] = contextBlock(spec);
  const pooled = new Map<string, Example>();
  const pool = (x: SparseVec, y: number, w: number): void => {
    const keep: number[] = [];
    x.idx.forEach((ix, k) => {
      if (ix >= lo && ix < hi) keep.push(k);
    });
    const key = keep.map((k) => x.idx[k]).join(',');
    const p = pooled.get(key);
    if (p === undefined) pooled.set(key, { x: { idx: Int32Array.from(keep, (k) => x.idx[k]!), val: Float32Array.from(keep, (k) => x.val[k]!) }, y, w });
    else {
      p.y = (p.y * p.w + y * w) / (p.w + w);
      p.w += w;
    }
  };
  const modelOnly = new Map<string, SparseVec>();
  examples.forEach((e, i) => {
    pool(e.x, e.y, e.w);
    const model = contexts?.[i]?.model;
    if (model === undefined) return;
    let x = modelOnly.get(model);
    if (x === undefined) modelOnly.set(model, (x = featurize('', { model }, spec)));
    pool(x, e.y, e.w);
  });
  const xs = [...pooled.values()];
  return trainMlp(xs, xs, featureDim(spec), { hidden1: 8, hidden2: 4, epochs: 300, patience: 20, batch: 8, lr: 0.01, weightDecay: 0, seed }).weights;
}

/**
 * Fit P = σ(a·r + d + b) on the weighted log-loss: Newton steps with
 * backtracking (the loss never goes up; saturated logits cannot throw the
 * step off), a kept in [1e-3, 1e3] so the order stays and stays finite.
 */
export function fitCalibration(r: Float64Array, d: Float64Array, examples: Example[]): { a: number; b: number } {
  const lossAt = (a: number, b: number): number => {
    let l = 0;
    examples.forEach((e, i) => {
      const z = a * r[i]! + d[i]! + b;
      // log(1 + e^z) − y·z, stable on both sides
      l += e.w * ((z > 0 ? z + Math.log1p(Math.exp(-z)) : Math.log1p(Math.exp(z))) - e.y * z);
    });
    return l;
  };
  const sd = Math.sqrt(r.reduce((s, x) => s + x * x, 0) / Math.max(1, r.length) - (r.reduce((s, x) => s + x, 0) / Math.max(1, r.length)) ** 2);
  let a = sd > 1e-9 ? Math.min(1e3, Math.max(1e-3, 1 / sd)) : 1;
  let b = 0;
  let loss = lossAt(a, b);
  for (let it = 0; it < 100; it++) {
    let ga = 0;
    let gb = 0;
    let haa = 1e-9;
    let hab = 0;
    let hbb = 1e-9;
    examples.forEach((e, i) => {
      const z = a * r[i]! + d[i]! + b;
      const p = 1 / (1 + Math.exp(-z));
      const g = (p - e.y) * e.w;
      const hw = Math.max(p * (1 - p), 1e-6) * e.w;
      ga += g * r[i]!;
      gb += g;
      haa += hw * r[i]! * r[i]!;
      hab += hw * r[i]!;
      hbb += hw;
    });
    const det = haa * hbb - hab * hab;
    if (!(det > 0)) break;
    const da = (hbb * ga - hab * gb) / det;
    const db = (haa * gb - hab * ga) / det;
    let t = 1;
    let next = { a, b, loss };
    while (t > 1e-6) {
      const na = Math.min(1e3, Math.max(1e-3, a - t * da));
      const nb = b - t * db;
      const nl = lossAt(na, nb);
      if (nl < loss) {
        next = { a: na, b: nb, loss: nl };
        break;
      }
      t /= 2;
    }
    const done = loss - next.loss < 1e-10 * Math.max(1, Math.abs(loss));
    ({ a, b, loss } = next);
    if (done) break;
  }
  return { a, b };
}

/**
 * Networks as one: hidden layers side by side (the second layer block
 * diagonal), the output the weighted sum of their logits plus a bias — still
 * one Gemm → Relu → Gemm → Relu → Gemm → Sigmoid network.
 */
export function combine(parts: Array<{ net: MlpWeights; coef: number }>, bias = 0): MlpWeights {
  const d = parts[0]!.net.dims[0];
  if (parts.some((p) => p.net.dims[0] !== d)) throw new Error('combined networks must share the input');
  const H1 = parts.reduce((s, p) => s + p.net.dims[1], 0);
  const H2 = parts.reduce((s, p) => s + p.net.dims[2], 0);
  const w1 = new Float32Array(d * H1);
  const w2 = new Float32Array(H1 * H2);
  const b1 = new Float32Array(H1);
  const b2 = new Float32Array(H2);
  const w3 = new Float32Array(H2);
  let b3 = bias;
  let o1 = 0;
  let o2 = 0;
  for (const { net: m, coef } of parts) {
    const [, h1, h2] = m.dims;
    for (let r = 0; r < d; r++) w1.set(m.w1.subarray(r * h1, (r + 1) * h1), r * H1 + o1);
    b1.set(m.b1, o1);
    for (let i = 0; i < h1; i++) w2.set(m.w2.subarray(i * h2, (i + 1) * h2), (o1 + i) * H2 + o2);
    b2.set(m.b2, o2);
    for (let j = 0; j < h2; j++) w3[o2 + j] = m.w3[j]! * coef;
    b3 += m.b3[0]! * coef;
    o1 += h1;
    o2 += h2;
  }
  return { dims: [d, H1, H2], w1, b1, w2, b2, w3, b3: Float32Array.of(b3) };
}

/** Members + difficulty head + calibration → the one network that is exported and served. */
export function assemble(
  members: MlpWeights[],
  examples: Example[],
  seed: number,
  spec: FeatureSpec = FEATURE_SPEC,
  contexts?: Array<Record<string, string>>,
): { weights: MlpWeights; calibration: { a: number; b: number } } {
  const ranking = combine(members.map((net) => ({ net, coef: 1 / members.length })));
  const difficulty = trainDifficulty(examples, seed, spec, contexts);
  const r = Float64Array.from(examples, (e) => logit(ranking, e.x));
  const d = Float64Array.from(examples, (e) => logit(difficulty, e.x));
  const cal = fitCalibration(r, d, examples);
  return {
    weights: combine(
      [
        { net: ranking, coef: cal.a },
        { net: difficulty, coef: 1 },
      ],
      cal.b,
    ),
    calibration: cal,
  };
}

/** The whole ranker, in this thread (members one after another). */
export function trainRanker(examples: Example[], o: RankerOptions = {}, contexts?: Array<Record<string, string>>): { weights: MlpWeights; epochs: number[] } {
  const seed = o.seed ?? 42;
  const k = o.ensemble ?? 3;
  const members = Array.from({ length: k }, (_, i) => trainMember(examples, seed + i, o));
  return { weights: assemble(members.map((m) => m.weights), examples, seed, o.spec, contexts).weights, epochs: members.map((m) => m.epochs) };
}
