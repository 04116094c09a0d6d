/** Held-out metrics for the scorer: AUC, log-loss, calibration error, Spearman, top-1 regret. */

export interface Weighted {
  p: number;
  y: number; // target in [0, 1]
  w: number;
}

/** Weighted ROC AUC with soft labels: each example counts y·w as positive and (1−y)·w as negative. */
export function auc(xs: Weighted[]): number {
  const sorted = [...xs].sort((a, b) => a.p - b.p);
  let negBelow = 0;
  let area = 0;
  let pos = 0;
  let neg = 0;
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    let tiePos = 0;
    let tieNeg = 0;
    while (j < sorted.length && sorted[j]!.p === sorted[i]!.p) {
      tiePos += sorted[j]!.y * sorted[j]!.w;
      tieNeg += (1 - sorted[j]!.y) * sorted[j]!.w;
      j++;
    }
    area += tiePos * (negBelow + tieNeg / 2);
    negBelow += tieNeg;
    pos += tiePos;
    neg += tieNeg;
    i = j;
  }
  return pos === 0 || neg === 0 ? 0.5 : area / (pos * neg);
}

export function logLoss(xs: Weighted[]): number {
  let l = 0;
  let w = 0;
  for (const x of xs) {
    const p = Math.min(1 - 1e-7, Math.max(1e-7, x.p));
    l += -x.w * (x.y * Math.log(p) + (1 - x.y) * Math.log(1 - p));
    w += x.w;
  }
  return w === 0 ? 0 : l / w;
}

/** Expected calibration error over 10 equal-width bins (weighted). */
export function ece(xs: Weighted[], bins = 10): number {
  const sum = new Array<number>(bins).fill(0);
  const hit = new Array<number>(bins).fill(0);
  const wt = new Array<number>(bins).fill(0);
  let total = 0;
  for (const x of xs) {
    const b = Math.min(bins - 1, Math.floor(x.p * bins));
    sum[b]! += x.p * x.w;
    hit[b]! += x.y * x.w;
    wt[b]! += x.w;
    total += x.w;
  }
  let e = 0;
  for (let b = 0; b < bins; b++) if (wt[b]! > 0) e += (wt[b]! / total) * Math.abs(sum[b]! / wt[b]! - hit[b]! / wt[b]!);
  return e;
}

function ranks(v: number[]): number[] {
  const order = v.map((x, i) => [x, i] as const).sort((a, b) => a[0] - b[0]);
  const r = new Array<number>(v.length);
  for (let i = 0; i < order.length; ) {
    let j = i;
    while (j < order.length && order[j]![0] === order[i]![0]) j++;
    for (let k = i; k < j; k++) r[order[k]![1]] = (i + j - 1) / 2;
    i = j;
  }
  return r;
}

export function spearman(a: number[], b: number[]): number {
  if (a.length < 2) return 0;
  const ra = ranks(a);
  const rb = ranks(b);
  const mean = (x: number[]): number => x.reduce((s, y) => s + y, 0) / x.length;
  const ma = mean(ra);
  const mb = mean(rb);
  let num = 0;
  let da = 0;
  let db = 0;
  for (let i = 0; i < ra.length; i++) {
    num += (ra[i]! - ma) * (rb[i]! - mb);
    da += (ra[i]! - ma) ** 2;
    db += (rb[i]! - mb) ** 2;
  }
  return da === 0 || db === 0 ? 0 : num / Math.sqrt(da * db);
}

/** Best true accuracy minus the true accuracy of the item the scores rank first. */
export function top1Regret(scores: number[], truth: number[]): number {
  let best = 0;
  for (let i = 1; i < scores.length; i++) if (scores[i]! > scores[best]!) best = i;
  return Math.max(...truth) - truth[best]!;
}
