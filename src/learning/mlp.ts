/**
 * A small MLP predicting P(success): input (sparse) → 64 → 32 → 1, ReLU,
 * sigmoid. Trained with Adam, decoupled weight decay, sample weights (an
 * aggregated cell of n executions is one example of weight n with a soft
 * target k/n), early stopping on a held-out split, deterministic by seed.
 *
 * Written by hand: no maintained JS library trains on sparse inputs in a
 * worker thread without native code, and the network is small enough that
 * Float32Array loops are fast (the first layer touches only the non-zero
 * inputs). The same forward pass is exported to ONNX (onnx.ts) and the two
 * are checked to agree.
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
  const [, h1, h2] = m.dims;
  const z1 = a1 ?? new Float32Array(h1);
  z1.set(m.b1);
  for (let k = 0; k < x.idx.length; k++) {
    const row = x.idx[k]! * h1;
    const v = x.val[k]!;
    for (let j = 0; j < h1; j++) z1[j]! += m.w1[row + j]! * v;
  }
  for (let j = 0; j < h1; j++) if (z1[j]! < 0) z1[j] = 0;
  const z2 = a2 ?? new Float32Array(h2);
  z2.set(m.b2);
  for (let i = 0; i < h1; i++) {
    const a = z1[i]!;
    if (a === 0) continue;
    const row = i * h2;
    for (let j = 0; j < h2; j++) z2[j]! += m.w2[row + j]! * a;
  }
  let z3 = m.b3[0]!;
  for (let j = 0; j < h2; j++) {
    if (z2[j]! < 0) z2[j] = 0;
    z3 += m.w3[j]! * z2[j]!;
  }
  return sigmoid(z3);
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
  const b1 = 0.9;
  const b2 = 0.999;
  let step = 0;
  const meanW = train.reduce((s, e) => s + e.w, 0) / Math.max(1, train.length);
  const a1 = new Float32Array(h1);
  const a2 = new Float32Array(h2);
  const d2 = new Float32Array(h2);
  const d1 = new Float32Array(h1);
  const order = Array.from(train.keys());
  let best = { loss: Infinity, weights: cloneWeights(m), epoch: 0 };
  let bad = 0;
  let epoch = 0;
  // rows of w1 touched in this batch (sparse update of the big first layer)
  const touched = new Set<number>();
  for (epoch = 1; epoch <= epochs; epoch++) {
    if (o.shouldStop?.()) break;
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(rnd() * (i + 1));
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    let trainLoss = 0;
    for (let start = 0; start < order.length; start += batch) {
      const end = Math.min(order.length, start + batch);
      touched.clear();
      for (const g of grads) g.fill(0, 0, g === gw1 ? 0 : g.length);
      for (let bi = start; bi < end; bi++) {
        const e = train[order[bi]!]!;
        const p = forward(m, e.x, a1, a2);
        const sw = e.w / meanW / (end - start);
        trainLoss += -e.w * (e.y * Math.log(Math.max(p, 1e-7)) + (1 - e.y) * Math.log(Math.max(1 - p, 1e-7)));
        const d3 = (p - e.y) * sw;
        gb3[0]! += d3;
        for (let j = 0; j < h2; j++) {
          gw3[j]! += d3 * a2[j]!;
          d2[j] = a2[j]! > 0 ? d3 * m.w3[j]! : 0;
          gb2[j]! += d2[j]!;
        }
        for (let i = 0; i < h1; i++) {
          const a = a1[i]!;
          let s = 0;
          const row = i * h2;
          for (let j = 0; j < h2; j++) {
            if (a !== 0) gw2[row + j]! += d2[j]! * a;
            s += d2[j]! * m.w2[row + j]!;
          }
          d1[i] = a > 0 ? s : 0;
          gb1[i]! += d1[i]!;
        }
        for (let k = 0; k < e.x.idx.length; k++) {
          const r = e.x.idx[k]!;
          const v = e.x.val[k]!;
          if (!touched.has(r)) {
            touched.add(r);
            gw1.fill(0, r * h1, r * h1 + h1);
          }
          const row = r * h1;
          for (let j = 0; j < h1; j++) gw1[row + j]! += d1[j]! * v;
        }
      }
      step++;
      const c1 = 1 - b1 ** step;
      const c2 = 1 - b2 ** step;
      const update = (pi: number, i: number): void => {
        const g = grads[pi]![i]!;
        const mm = (mom[pi]![i] = b1 * mom[pi]![i]! + (1 - b1) * g);
        const vv = (vel[pi]![i] = b2 * vel[pi]![i]! + (1 - b2) * g * g);
        params[pi]![i]! -= lr * ((mm / c1) / (Math.sqrt(vv / c2) + 1e-8) + wd * params[pi]![i]!);
      };
      // first layer: only the rows this batch touched (lazy Adam for sparse inputs)
      for (const r of touched) for (let j = 0; j < h1; j++) update(0, r * h1 + j);
      for (let pi = 1; pi < params.length; pi++) for (let i = 0; i < params[pi]!.length; i++) update(pi, i);
    }
    const valLoss = weightedLogLoss(m, val);
    o.onEpoch?.({ epoch, trainLoss: trainLoss / Math.max(1, train.reduce((s, e) => s + e.w, 0)), valLoss });
    if (valLoss < best.loss - 1e-5) {
      best = { loss: valLoss, weights: cloneWeights(m), epoch };
      bad = 0;
    } else if (++bad >= patience) break;
  }
  return { weights: best.weights, epochs: best.epoch, valLoss: best.loss };
}

export function cloneWeights(m: MlpWeights): MlpWeights {
  return { dims: [...m.dims] as [number, number, number], w1: m.w1.slice(), b1: m.b1.slice(), w2: m.w2.slice(), b2: m.b2.slice(), w3: m.w3.slice(), b3: m.b3.slice() };
}

export function predictAll(m: MlpWeights, xs: SparseVec[]): number[] {
  const a1 = new Float32Array(m.dims[1]);
  const a2 = new Float32Array(m.dims[2]);
  return xs.map((x) => forward(m, x, a1, a2));
}
