/**
 * A small MLP predicting P(success): input (sparse) → 64 → 32 → 1, ReLU,
 * sigmoid. Trained with Adam, decoupled weight decay, sample weights (an
 * aggregated cell of n executions is one example of weight n with a soft
 * target k/n), early stopping on a held-out split, deterministic by seed.
 *
 * Written by hand: no maintained JS library trains on sparse inputs in a
 * worker thread without native code, and the network is small enough that
 * Float32Array loops are fast (the first layer touches only the non-zero
 * inputs). The loops that dominate training are arranged for speed and give
 * exactly what plain loops give (test/mlp.test.ts checks both, bit for bit;
 * bench/learning.ts measures them beside a baseline). The same forward pass
 * is exported to ONNX (onnx.ts) and the two are checked to agree.
 */
import { seededRandom as seeded } from '../random.js';
import type { SparseVec } from './features.js';

export { seeded };

export interface MlpWeights {
  dims: [number, number, number]; // input, hidden1, hidden2
  w1: Float32Array; // [input][h1]
  b1: Float32Array;
  w2: Float32Array; // [h1][h2]
  b2: Float32Array;
  w3: Float32Array; // [h2]
  b3: Float32Array; // [1]
}

export interface Example {
  x: SparseVec;
  /** target in [0, 1] (soft for aggregated cells) */
  y: number;
  w: number;
  /** ranking group (e.g. one (task, model) pair): a ranking loss compares examples of one group only */
  group?: number;
}

export interface TrainOptions {
  hidden1?: number;
  hidden2?: number;
  epochs?: number;
  lr?: number;
  weightDecay?: number;
  batch?: number;
  patience?: number;
  seed?: number;
  /**
   * pointwise: weighted log-loss on P(success) (the default);
   * listwise: softmax cross-entropy within each group against softmax(z/T) of the group-standardised targets;
   * pairwise: RankNet logistic loss on logit differences within each group, weighted by the target difference;
   * regression: squared error of the logit, centred within the list, against the group-standardised target.
   */
  loss?: 'pointwise' | 'listwise' | 'pairwise' | 'regression';
  /** with a ranking loss: weight of the pointwise log-loss added to it (keeps the output a calibrated-ish P(success)); default 0 */
  pointwiseWeight?: number;
  /** with a ranking loss: items per list (a group is cut into lists of about this size each epoch); default 32 */
  listSize?: number;
  /** listwise target temperature; default 1 */
  temperature?: number;
  /** ranking targets within a group: z-scores of the targets, or normal scores of their ranks (robust to a few broken prompts); default rank */
  targets?: 'z' | 'rank';
  onEpoch?: (e: { epoch: number; trainLoss: number; valLoss: number }) => void;
  shouldStop?: () => boolean;
}

export function initWeights(input: number, h1: number, h2: number, rnd: () => number): MlpWeights {
  const he = (fanIn: number, n: number): Float32Array => {
    const out = new Float32Array(n);
    const s = Math.sqrt(2 / fanIn);
    for (let i = 0; i < n; i++) {
      const u = rnd() || 1e-12;
      out[i] = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rnd()) * s;
    }
    return out;
  };
  return { dims: [input, h1, h2], w1: he(32, input * h1), b1: new Float32Array(h1), w2: he(h1, h1 * h2), b2: new Float32Array(h2), w3: he(h2, h2), b3: new Float32Array(1) };
}

const sigmoid = (z: number): number => (z >= 0 ? 1 / (1 + Math.exp(-z)) : Math.exp(z) / (1 + Math.exp(z)));

/** Forward pass for one sparse input; fills the activations when given (for backprop). */
export function forward(m: MlpWeights, x: SparseVec, a1?: Float32Array, a2?: Float32Array): number {
  return sigmoid(logit(m, x, a1, a2));
}

/** The pre-sigmoid output (the ranking logit). */
export function logit(m: MlpWeights, x: SparseVec, a1?: Float32Array, a2?: Float32Array): number {
  const [, h1, h2] = m.dims;
  const z1 = a1 ?? new Float32Array(h1);
  const z2 = a2 ?? new Float32Array(h2);
  reluLayer(z1, h1, m.b1, m.w1, x.idx, x.val, x.idx.length);
  // the second layer's inputs: the first layer's units that are on, in order
  if (onIdx.length < h1) [onIdx, onVal] = [new Int32Array(h1), new Float32Array(h1)];
  let n = 0;
  for (let i = 0; i < h1; i++) {
    const a = z1[i]!;
    if (a !== 0) {
      onIdx[n] = i;
      onVal[n++] = a;
    }
  }
  reluLayer(z2, h2, m.b2, m.w2, onIdx, onVal, n);
  let z3 = m.b3[0]!;
  for (let j = 0; j < h2; j++) z3 += m.w3[j]! * z2[j]!;
  return z3;
}

/** Scratch for the second layer's inputs (one thread runs one pass at a time). */
let onIdx = new Int32Array(64);
let onVal = new Float32Array(64);

/**
 * out[j] = max(0, bias[j] + Σ w[idx[k] * width + j] · val[k]) over k < n,
 * for j < width. Each unit sums its inputs in order, rounded to
 * float32 after each addition (Math.fround, as a store into a Float32Array
 * rounds), so the result is bit for bit that of a loop that adds each input
 * to every unit in turn: the units are taken 8 at a time with their sums in
 * locals instead of being read and written back once per input (training's
 * hottest loop).
 */
function reluLayer(out: Float32Array, width: number, bias: Float32Array, w: Float32Array, idx: Int32Array, val: Float32Array, n: number): void {
  const f = Math.fround;
  let j = 0;
  for (; j + 8 <= width; j += 8) {
    let s0 = bias[j]!, s1 = bias[j + 1]!, s2 = bias[j + 2]!, s3 = bias[j + 3]!, s4 = bias[j + 4]!, s5 = bias[j + 5]!, s6 = bias[j + 6]!, s7 = bias[j + 7]!;
    for (let k = 0; k < n; k++) {
      const o = idx[k]! * width + j;
      const v = val[k]!;
      s0 = f(s0 + w[o]! * v);
      s1 = f(s1 + w[o + 1]! * v);
      s2 = f(s2 + w[o + 2]! * v);
      s3 = f(s3 + w[o + 3]! * v);
      s4 = f(s4 + w[o + 4]! * v);
      s5 = f(s5 + w[o + 5]! * v);
      s6 = f(s6 + w[o + 6]! * v);
      s7 = f(s7 + w[o + 7]! * v);
    }
    out[j] = s0 < 0 ? 0 : s0;
    out[j + 1] = s1 < 0 ? 0 : s1;
    out[j + 2] = s2 < 0 ? 0 : s2;
    out[j + 3] = s3 < 0 ? 0 : s3;
    out[j + 4] = s4 < 0 ? 0 : s4;
    out[j + 5] = s5 < 0 ? 0 : s5;
    out[j + 6] = s6 < 0 ? 0 : s6;
    out[j + 7] = s7 < 0 ? 0 : s7;
  }
  for (; j < width; j++) {
    let s = bias[j]!;
    for (let k = 0; k < n; k++) s = f(s + w[idx[k]! * width + j]! * val[k]!);
    out[j] = s < 0 ? 0 : s;
  }
}

/** Forward pass on a dense row (what the ONNX graph computes), for parity tests. */
export function forwardDense(m: MlpWeights, row: Float32Array): number {
  const idx: number[] = [];
  const val: number[] = [];
  row.forEach((v, i) => {
    if (v !== 0) {
      idx.push(i);
      val.push(v);
    }
  });
  return forward(m, { idx: Int32Array.from(idx), val: Float32Array.from(val) });
}

export function weightedLogLoss(m: MlpWeights, data: Example[]): number {
  let loss = 0;
  let wsum = 0;
  for (const e of data) {
    const p = Math.min(1 - 1e-7, Math.max(1e-7, forward(m, e.x)));
    loss += -e.w * (e.y * Math.log(p) + (1 - e.y) * Math.log(1 - p));
    wsum += e.w;
  }
  return wsum === 0 ? 0 : loss / wsum;
}

/** Train on `train`, early-stop on `val`; returns the best weights seen. */
export function trainMlp(train: Example[], val: Example[], input: number, o: TrainOptions = {}): { weights: MlpWeights; epochs: number; valLoss: number } {
  const h1 = o.hidden1 ?? 64;
  const h2 = o.hidden2 ?? 32;
  const rnd = seeded(o.seed ?? 42);
  const m = initWeights(input, h1, h2, rnd);
  const params = [m.w1, m.b1, m.w2, m.b2, m.w3, m.b3];
  const grads = params.map((p) => new Float32Array(p.length));
  const mom = params.map((p) => new Float32Array(p.length));
  const vel = params.map((p) => new Float32Array(p.length));
  const [gw1, gb1, gw2, gb2, gw3, gb3] = grads as [Float32Array, Float32Array, Float32Array, Float32Array, Float32Array, Float32Array];
  const lr = o.lr ?? 0.003;
  const wd = o.weightDecay ?? 1e-4;
  const batch = o.batch ?? 64;
  const epochs = o.epochs ?? 30;
  const patience = o.patience ?? 4;
  const loss = o.loss ?? 'pointwise';
  const ranking = loss !== 'pointwise';
  const pointW = ranking ? (o.pointwiseWeight ?? 0) : 1;
  const listSize = o.listSize ?? 32;
  const temperature = o.temperature ?? 1;
  const b1 = 0.9;
  const b2 = 0.999;
  let step = 0;
  const meanW = train.reduce((s, e) => s + e.w, 0) / Math.max(1, train.length);
  const d2 = new Float32Array(h2);
  // the first layer's units with a gradient in the item under way, and their gradients (float32, as a Float32Array held them)
  const active = new Int32Array(h1);
  const activeGrad = new Float32Array(h1);
  // activations of every item of a step (a ranking loss needs all logits of a list before any backward pass)
  const acts1 = Array.from({ length: batch + 4 * listSize }, () => new Float32Array(h1));
  const acts2 = Array.from({ length: acts1.length }, () => new Float32Array(h2));
  const targets = o.targets ?? 'rank';
  const target = ranking ? groupTargets(train, targets) : new Float32Array(0);
  const valTarget = ranking ? groupTargets(val, targets) : new Float32Array(0);
  const valLossOf = (): number => (ranking ? rankingLoss(m, val, valTarget, loss, temperature) + pointW * weightedLogLoss(m, val) : weightedLogLoss(m, val));
  let best = { loss: Infinity, weights: cloneWeights(m), epoch: 0 };
  let bad = 0;
  let epoch = 0;
  // rows of w1 touched in this step (sparse update of the big first layer)
  const touched = new Int32Array(input);
  const mark = new Uint8Array(input);
  let nTouched = 0;
  // rows of w1 any training example touched: the others hold only their random initialisation
  const seen = new Uint8Array(input);
  for (const e of train) for (let k = 0; k < e.x.idx.length; k++) seen[e.x.idx[k]!] = 1;

  /** Accumulate the gradients of one item whose logit has gradient d3. */
  const backward = (e: Example, a1: Float32Array, a2: Float32Array, d3: number): void => {
    gb3[0]! += d3;
    for (let j = 0; j < h2; j++) {
      gw3[j]! += d3 * a2[j]!;
      d2[j] = a2[j]! > 0 ? d3 * m.w3[j]! : 0;
      gb2[j]! += d2[j]!;
    }
    // The first layer is updated through its units with a gradient only (a unit whose gradient is 0 would
    // add a signed zero, which leaves every sum unchanged: a gradient sum that starts at +0 is never -0), so
    // the result is bit for bit that of the loop over every unit, in about half its time (ReLU leaves many
    // units off, and they have none).
    let nActive = 0;
    for (let i = 0; i < h1; i++) {
      const a = a1[i]!;
      if (a <= 0) continue; // ReLU off: no gradient through this unit
      let s = 0;
      const row = i * h2;
      for (let j = 0; j < h2; j++) {
        gw2[row + j]! += d2[j]! * a;
        s += d2[j]! * m.w2[row + j]!;
      }
      gb1[i]! += s;
      const d = Math.fround(s);
      if (d !== 0) {
        active[nActive] = i;
        activeGrad[nActive++] = d;
      }
    }
    const { idx, val } = e.x;
    for (let k = 0; k < idx.length; k++) {
      const r = idx[k]!;
      const v = val[k]!;
      if (mark[r] === 0) {
        mark[r] = 1;
        touched[nTouched++] = r;
        gw1.fill(0, r * h1, r * h1 + h1);
      }
      const row = r * h1;
      for (let t = 0; t < nActive; t++) gw1[row + active[t]!]! += activeGrad[t]! * v;
    }
  };

  const adamStep = (): void => {
    step++;
    const c1 = 1 - b1 ** step;
    const c2 = 1 - b2 ** step;
    const update = (pi: number, i: number): void => {
      const g = grads[pi]![i]!;
      const mm = (mom[pi]![i] = b1 * mom[pi]![i]! + (1 - b1) * g);
      const vv = (vel[pi]![i] = b2 * vel[pi]![i]! + (1 - b2) * g * g);
      params[pi]![i]! -= lr * ((mm / c1) / (Math.sqrt(vv / c2) + 1e-8) + wd * params[pi]![i]!);
    };
    // first layer: only the rows this step touched (lazy Adam for sparse inputs)
    const w1 = params[0]!;
    const m1 = mom[0]!;
    const v1 = vel[0]!;
    for (let t = 0; t < nTouched; t++) {
      const r = touched[t]!;
      for (let i = r * h1, end = i + h1; i < end; i++) {
        const g = gw1[i]!;
        const mm = (m1[i] = b1 * m1[i]! + (1 - b1) * g);
        const vv = (v1[i] = b2 * v1[i]! + (1 - b2) * g * g);
        w1[i]! -= lr * ((mm / c1) / (Math.sqrt(vv / c2) + 1e-8) + wd * w1[i]!);
      }
    }
    for (let pi = 1; pi < params.length; pi++) for (let i = 0; i < params[pi]!.length; i++) update(pi, i);
  };

  const resetGrads = (): void => {
    for (let t = 0; t < nTouched; t++) mark[touched[t]!] = 0;
    nTouched = 0;
    for (const g of grads) if (g !== gw1) g.fill(0);
  };

  /** One step on the items `ids` (lists: consecutive runs of one group each). */
  const logits = new Float64Array(acts1.length);
  const dl = new Float64Array(acts1.length);
  const stepOn = (ids: number[], lists: Array<[number, number]>): number => {
    if (ids.length > acts1.length) throw new Error(`a step of ${ids.length} items exceeds the ${acts1.length} allocated`);
    resetGrads();
    let lossSum = 0;
    for (let k = 0; k < ids.length; k++) logits[k] = logit(m, train[ids[k]!]!.x, acts1[k], acts2[k]);
    dl.fill(0, 0, ids.length);
    // pointwise log-loss (soft target, weight n)
    if (pointW > 0)
      for (let k = 0; k < ids.length; k++) {
        const e = train[ids[k]!]!;
        const p = sigmoid(logits[k]!);
        lossSum += (pointW * -e.w * (e.y * Math.log(Math.max(p, 1e-7)) + (1 - e.y) * Math.log(Math.max(1 - p, 1e-7)))) / meanW;
        dl[k]! += (pointW * (p - e.y) * e.w) / meanW / ids.length;
      }
    // ranking loss within each list
    if (ranking)
      for (const [from, to] of lists) lossSum += listGrad(loss, logits, ids, target, from, to, temperature, dl, lists.length);
    for (let k = 0; k < ids.length; k++) backward(train[ids[k]!]!, acts1[k]!, acts2[k]!, dl[k]!);
    adamStep();
    return lossSum;
  };

  const order = Array.from(train.keys());
  const groups = ranking ? groupIndices(train) : [];
  for (epoch = 1; epoch <= epochs; epoch++) {
    if (o.shouldStop?.()) break;
    let trainLoss = 0;
    if (!ranking) {
      shuffle(order, rnd);
      for (let start = 0; start < order.length; start += batch) {
        const ids = order.slice(start, Math.min(order.length, start + batch));
        trainLoss += stepOn(ids, []);
      }
    } else {
      // lists: each group shuffled and cut into runs of listSize; a step takes lists until it holds `batch` items
      const lists: number[][] = [];
      for (const g of groups) {
        shuffle(g, rnd);
        const n = Math.max(1, Math.ceil(g.length / listSize));
        for (let i = 0; i < n; i++) lists.push(g.slice(Math.floor((i * g.length) / n), Math.floor(((i + 1) * g.length) / n)));
      }
      shuffle(lists, rnd);
      let ids: number[] = [];
      let spans: Array<[number, number]> = [];
      for (const l of lists) {
        if (l.length < 2) continue;
        spans.push([ids.length, ids.length + l.length]);
        ids.push(...l);
        if (ids.length >= batch) {
          trainLoss += stepOn(ids, spans);
          ids = [];
          spans = [];
        }
      }
      if (ids.length > 0) trainLoss += stepOn(ids, spans);
    }
    const valLoss = valLossOf();
    o.onEpoch?.({ epoch, trainLoss: trainLoss / Math.max(1, train.length), valLoss });
    if (valLoss < best.loss - 1e-5) {
      best = { loss: valLoss, weights: cloneWeights(m), epoch };
      bad = 0;
    } else if (++bad >= patience) break;
  }
  // An input no training example had keeps its random initial weights: zero them, so an unseen
  // feature (a new word bucket, an unseen task or model) contributes nothing instead of noise.
  for (let r = 0; r < input; r++) if (seen[r] === 0) best.weights.w1.fill(0, r * h1, r * h1 + h1);
  return { weights: best.weights, epochs: best.epoch, valLoss: best.loss };
}

function shuffle<T>(a: T[], rnd: () => number): void {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
}

/** Indices of the examples of each group (examples without a group are left out of ranking). */
function groupIndices(xs: Example[]): number[][] {
  const m = new Map<number, number[]>();
  xs.forEach((e, i) => {
    if (e.group === undefined) return;
    let l = m.get(e.group);
    if (l === undefined) m.set(e.group, (l = []));
    l.push(i);
  });
  return [...m.values()];
}

/**
 * Ranking targets, standardised within each group: z-scores, or normal scores
 * of the mid-ranks (Φ⁻¹((rank − ½)/n); ties share a score); 0 for a constant group.
 */
export function groupTargets(xs: Example[], kind: 'z' | 'rank' = 'rank'): Float32Array {
  const out = new Float32Array(xs.length);
  for (const g of groupIndices(xs)) {
    const mean = g.reduce((s, i) => s + xs[i]!.y, 0) / g.length;
    const sd = Math.sqrt(g.reduce((s, i) => s + (xs[i]!.y - mean) ** 2, 0) / g.length);
    if (sd <= 1e-9) continue;
    if (kind === 'z') {
      for (const i of g) out[i] = (xs[i]!.y - mean) / sd;
      continue;
    }
    const sorted = [...g].sort((a, b) => xs[a]!.y - xs[b]!.y);
    for (let a = 0; a < sorted.length; ) {
      let b = a;
      while (b < sorted.length && xs[sorted[b]!]!.y === xs[sorted[a]!]!.y) b++;
      const score = normalQuantile(((a + b - 1) / 2 + 0.5) / sorted.length);
      for (let k = a; k < b; k++) out[sorted[k]!] = score;
      a = b;
    }
  }
  return out;
}

/** Φ⁻¹(p), Acklam's rational approximation (relative error < 1.2e-9). */
export function normalQuantile(p: number): number {
  const a = [-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716, 2.506628277459239];
  const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572];
  const c = [-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const lo = 0.02425;
  if (p < lo) {
    const q = Math.sqrt(-2 * Math.log(p));
    return (((((c[0]! * q + c[1]!) * q + c[2]!) * q + c[3]!) * q + c[4]!) * q + c[5]!) / ((((d[0]! * q + d[1]!) * q + d[2]!) * q + d[3]!) * q + 1);
  }
  if (p > 1 - lo) return -normalQuantile(1 - p);
  const q = p - 0.5;
  const r = q * q;
  return ((((((a[0]! * r + a[1]!) * r + a[2]!) * r + a[3]!) * r + a[4]!) * r + a[5]!) * q) / (((((b[0]! * r + b[1]!) * r + b[2]!) * r + b[3]!) * r + b[4]!) * r + 1);
}

/**
 * Gradient of a list's ranking loss with respect to its logits (added into
 * `dl`, scaled by 1/lists), returning the loss.
 *  - listwise (ListNet): cross-entropy between softmax(target/T) and softmax(logits);
 *  - pairwise (RankNet): logistic loss on logit differences of every pair in
 *    the list, weighted by the target difference (pairs per list normalised).
 */
function listGrad(kind: 'listwise' | 'pairwise' | 'regression', s: Float64Array, ids: number[], z: Float32Array, from: number, to: number, t: number, dl: Float64Array, lists: number): number {
  let loss = 0;
  if (kind === 'regression') {
    // logits centred within the list: only differences within a group are learned
    let ms = 0;
    let mz = 0;
    for (let k = from; k < to; k++) {
      ms += s[k]!;
      mz += z[ids[k]!]!;
    }
    ms /= to - from;
    mz /= to - from;
    for (let k = from; k < to; k++) {
      const e = s[k]! - ms - (z[ids[k]!]! - mz);
      loss += (e * e) / (to - from);
      // d/ds_k of mean squared centred error (the centring terms sum to zero)
      dl[k]! += (2 * e) / (to - from) / lists;
    }
    return loss;
  }
  if (kind === 'listwise') {
    let ms = -Infinity;
    let mz = -Infinity;
    for (let k = from; k < to; k++) {
      ms = Math.max(ms, s[k]!);
      mz = Math.max(mz, z[ids[k]!]! / t);
    }
    let zs = 0;
    let zz = 0;
    for (let k = from; k < to; k++) {
      zs += Math.exp(s[k]! - ms);
      zz += Math.exp(z[ids[k]!]! / t - mz);
    }
    for (let k = from; k < to; k++) {
      const p = Math.exp(s[k]! - ms) / zs;
      const q = Math.exp(z[ids[k]!]! / t - mz) / zz;
      loss += -q * Math.log(Math.max(p, 1e-12));
      dl[k]! += (p - q) / lists;
    }
    return loss;
  }
  let pairs = 0;
  for (let a = from; a < to; a++)
    for (let b = a + 1; b < to; b++) {
      const dz = z[ids[a]!]! - z[ids[b]!]!;
      if (dz === 0) continue;
      pairs++;
    }
  if (pairs === 0) return 0;
  for (let a = from; a < to; a++)
    for (let b = a + 1; b < to; b++) {
      let dz = z[ids[a]!]! - z[ids[b]!]!;
      if (dz === 0) continue;
      // orient: i should rank above j
      const [i, j] = dz > 0 ? [a, b] : [b, a];
      dz = Math.abs(dz);
      const diff = s[i]! - s[j]!;
      const w = dz / pairs / lists;
      loss += dz * (diff > 0 ? Math.log1p(Math.exp(-diff)) : -diff + Math.log1p(Math.exp(diff)));
      const g = -w * sigmoid(-diff);
      dl[i]! += g;
      dl[j]! -= g;
    }
  return loss / pairs;
}

/** Mean ranking loss over whole validation groups. */
function rankingLoss(m: MlpWeights, xs: Example[], z: Float32Array, kind: 'listwise' | 'pairwise' | 'regression', t: number): number {
  const groups = groupIndices(xs).filter((g) => g.length >= 2);
  if (groups.length === 0) return 0;
  let total = 0;
  for (const g of groups) {
    const s = Float64Array.from(g, (i) => logit(m, xs[i]!.x));
    const dl = new Float64Array(g.length);
    const local = Float32Array.from(g, (i) => z[i]!);
    total += listGrad(kind, s, Array.from(g.keys()), local, 0, g.length, t, dl, 1);
  }
  return total / groups.length;
}

export function cloneWeights(m: MlpWeights): MlpWeights {
  return { dims: [...m.dims] as [number, number, number], w1: m.w1.slice(), b1: m.b1.slice(), w2: m.w2.slice(), b2: m.b2.slice(), w3: m.w3.slice(), b3: m.b3.slice() };
}

export function predictAll(m: MlpWeights, xs: SparseVec[]): number[] {
  const a1 = new Float32Array(m.dims[1]);
  const a2 = new Float32Array(m.dims[2]);
  return xs.map((x) => forward(m, x, a1, a2));
}
