/**
 * The MLP's loops are written for speed (the training's hottest code, run by
 * the offline evaluation, `train:default` and the sidecar's retraining): the
 * forward pass takes its units 8 at a time with their sums in locals, the
 * backward pass skips the units without a gradient. Both must give exactly
 * what the plain loops give: the forward pass is checked against a plain
 * loop here, bit for bit, on widths that are and are not multiples of 8; the
 * training against the weights the plain loops trained (their hash, taken
 * before the loops changed), for a ranking and a pointwise loss.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { SparseVec } from '../src/learning/features.js';
import { initWeights, logit, seeded, trainMlp, type Example, type MlpWeights } from '../src/learning/mlp.js';

/** The forward pass as a plain loop: each unit's float32 sum updated once per input. */
function plainLogit(m: MlpWeights, x: SparseVec, z1: Float32Array, z2: Float32Array): number {
  const [, h1, h2] = m.dims;
  z1.set(m.b1);
  for (let k = 0; k < x.idx.length; k++) for (let j = 0; j < h1; j++) z1[j]! += m.w1[x.idx[k]! * h1 + j]! * x.val[k]!;
  for (let j = 0; j < h1; j++) if (z1[j]! < 0) z1[j] = 0;
  z2.set(m.b2);
  for (let i = 0; i < h1; i++) if (z1[i]! !== 0) for (let j = 0; j < h2; j++) z2[j]! += m.w2[i * h2 + j]! * z1[i]!;
  let z3 = m.b3[0]!;
  for (let j = 0; j < h2; j++) {
    if (z2[j]! < 0) z2[j] = 0;
    z3 += m.w3[j]! * z2[j]!;
  }
  return z3;
}

/** A sparse input: sorted distinct rows, values of either sign (some exactly 0). */
function sparse(rnd: () => number, input: number, nnz: number): SparseVec {
  const rows = new Set<number>();
  while (rows.size < nnz) rows.add(Math.floor(rnd() * input));
  const idx = Int32Array.from([...rows].sort((a, b) => a - b));
  const val = Float32Array.from(idx, () => (rnd() < 0.1 ? 0 : (rnd() - 0.4) * 3));
  return { idx, val };
}

/** Examples in groups of 6 whose targets follow a few of the inputs (so the training learns something). */
function examples(rnd: () => number, input: number, n: number): Example[] {
  return Array.from({ length: n }, (_, i) => {
    const x = sparse(rnd, input, 20);
    let s = 0;
    for (let k = 0; k < x.idx.length; k++) if (x.idx[k]! % 7 === 0) s += x.val[k]!;
    return { x, y: 1 / (1 + Math.exp(-s)), w: 1 + Math.floor(rnd() * 20), group: Math.floor(i / 6) };
  });
}

const hashOf = (m: MlpWeights): string => {
  const h = createHash('sha256');
  for (const a of [m.w1, m.b1, m.w2, m.b2, m.w3, m.b3]) h.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  return h.digest('hex').slice(0, 16);
};

describe('the MLP loops', () => {
  it('forward: bit for bit the plain loop, logit and activations, whatever the widths', () => {
    const rnd = seeded(7);
    for (const [input, h1, h2] of [
      [400, 64, 32],
      [400, 8, 4],
      [60, 13, 5],
      [60, 3, 9],
    ] as const) {
      const m = initWeights(input, h1, h2, rnd);
      for (let i = 0; i < h1; i++) m.b1[i] = (rnd() - 0.5) * 0.2;
      for (let i = 0; i < h2; i++) m.b2[i] = (rnd() - 0.5) * 0.2;
      for (let t = 0; t < 200; t++) {
        const x = sparse(rnd, input, 1 + Math.floor(rnd() * Math.min(input - 1, 150)));
        const [a1, a2, p1, p2] = [new Float32Array(h1), new Float32Array(h2), new Float32Array(h1), new Float32Array(h2)];
        const got = logit(m, x, a1, a2);
        const want = plainLogit(m, x, p1, p2);
        expect(Object.is(got, want)).toBe(true);
        expect(Buffer.from(a1.buffer).equals(Buffer.from(p1.buffer))).toBe(true);
        expect(Buffer.from(a2.buffer).equals(Buffer.from(p2.buffer))).toBe(true);
        expect(Object.is(logit(m, x), want)).toBe(true);
      }
    }
  });

  it('training: the weights the plain loops trained, bit for bit (pairwise ranking, and pointwise)', () => {
    const rnd = seeded(11);
    const input = 300;
    const train = examples(rnd, input, 600);
    const val = examples(rnd, input, 120);
    const ranked = trainMlp(train, val, input, { loss: 'pairwise', targets: 'rank', epochs: 4, patience: 2, seed: 3 });
    const pointwise = trainMlp(train, val, input, { hidden1: 8, hidden2: 4, epochs: 4, seed: 5 });
    expect({ ranked: hashOf(ranked.weights), pointwise: hashOf(pointwise.weights) }).toEqual({ ranked: '6f887425ddc25015', pointwise: 'd1a70b167bb1bccb' });
  });
});
