/**
 * Bandit maths for choosing among prompt variants from their outcomes: the
 * one Beta-posterior type (`Beta`), Thompson sampling over any list of
 * posteriors, P(a beats b) and Monte Carlo P(best). Used by `select_variant`,
 * the closed loop's experiments and the benchmark's baselines. Written by
 * hand: it is a few dozen lines and must run seeded (a simulation replays
 * the same way).
 */

export interface Outcomes {
  successes: number;
  count: number;
}

/** A Beta(α, β) posterior over a success rate: prior pseudo-outcomes plus counted ones. */
export interface Beta {
  readonly alpha: number;
  readonly beta: number;
}

/** The posterior after `o` outcomes on top of `prior`. */
export const betaOf = (prior: Beta, o: Outcomes): Beta => ({ alpha: prior.alpha + o.successes, beta: prior.beta + o.count - o.successes });

export const betaMean = (b: Beta): number => b.alpha / (b.alpha + b.beta);

/** The variance of a Beta posterior. */
export function betaVariance(b: Beta): number {
  const n = b.alpha + b.beta;
  const m = b.alpha / n;
  return (m * (1 - m)) / (n + 1);
}

/** P(a > b) for two independent estimates given by their means and variances (normal approximation). */
export function pGreater(a: { mean: number; variance: number }, b: { mean: number; variance: number }): number {
  return normalCdf((a.mean - b.mean) / Math.sqrt(a.variance + b.variance + 1e-12));
}

/** P(a's rate > b's rate) under two independent Beta posteriors (normal approximation with the exact variances). */
export function pBetter(a: Beta, b: Beta): number {
  return pGreater({ mean: betaMean(a), variance: betaVariance(a) }, { mean: betaMean(b), variance: betaVariance(b) });
}

/** The 95% interval of a Beta posterior (normal approximation, clamped to 0..1). */
export function betaInterval(b: Beta): [number, number] {
  const n = b.alpha + b.beta;
  const m = b.alpha / n;
  const h = 1.96 * Math.sqrt((m * (1 - m)) / (n + 1));
  return [Math.max(0, m - h), Math.min(1, m + h)];
}

/**
 * Thompson sampling: one draw per item from its posterior, in order; the
 * highest draw wins. A single item is returned without a draw unless the
 * caller watches the draws (`onDraw`).
 */
export function thompsonPick<T>(items: readonly T[], posterior: (item: T) => Beta, rnd: () => number, onDraw?: (item: T, p: Beta, draw: number) => void, drawOf?: (item: T) => number): T {
  let chosen = items[0] as T;
  if (items.length < 2 && onDraw === undefined) return chosen;
  let best = -Infinity;
  for (const item of items) {
    const p = posterior(item);
    // A posterior that is not a Beta (a Normal on a reward) draws by itself.
    const d = drawOf === undefined ? sampleBeta(p.alpha, p.beta, rnd) : drawOf(item);
    onDraw?.(item, p, d);
    if (d > best) {
      best = d;
      chosen = item;
    }
  }
  return chosen;
}

/** Monte Carlo P(best) of each item: the share of `draws` Thompson rounds it wins. */
export function pBest<T>(items: readonly T[], posterior: (item: T) => Beta, draws: number, rnd: () => number): Map<T, number> {
  const ps = new Map(items.map((i) => [i, posterior(i)]));
  return pBestBy(items, (i) => sampleBeta(ps.get(i)!.alpha, ps.get(i)!.beta, rnd), draws);
}

/** Monte Carlo P(best) with any posterior: `draw(item)` samples its value once. */
export function pBestBy<T>(items: readonly T[], draw: (item: T) => number, draws: number): Map<T, number> {
  const wins = new Map<T, number>(items.map((i) => [i, 0]));
  if (items.length === 0) return wins;
  for (let i = 0; i < draws; i++) {
    let best = 0;
    let bestDraw = -Infinity;
    for (let j = 0; j < items.length; j++) {
      const d = draw(items[j]!);
      if (d > bestDraw) {
        bestDraw = d;
        best = j;
      }
    }
    wins.set(items[best]!, wins.get(items[best]!)! + 1);
  }
  return new Map([...wins].map(([item, w]) => [item, w / draws]));
}

export interface ThompsonDraw {
  id: string;
  alpha: number;
  beta: number;
  draw: number;
}

/** Thompson sampling over tracked outcomes by prompt id, with every draw reported (`select_variant`, the baselines). */
export function thompson(ids: readonly string[], outcomes: ReadonlyMap<string, Outcomes>, rnd: () => number, prior: Beta = { alpha: 1, beta: 1 }): { chosen: string; draws: ThompsonDraw[] } {
  const draws: ThompsonDraw[] = [];
  const chosen = thompsonPick(ids, (id) => betaOf(prior, outcomes.get(id) ?? { successes: 0, count: 0 }), rnd, (id, p, draw) => draws.push({ id, alpha: p.alpha, beta: p.beta, draw }));
  return { chosen, draws };
}

/** A standard normal draw (Box–Muller). */
export function sampleNormal(rnd: () => number): number {
  const u1 = rnd() || Number.MIN_VALUE;
  return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * rnd());
}

/** Beta(α, β) from two Gamma draws (Marsaglia–Tsang). */
export function sampleBeta(alpha: number, beta: number, rnd: () => number): number {
  const x = sampleGamma(alpha, rnd);
  const y = sampleGamma(beta, rnd);
  return x / (x + y);
}

function sampleGamma(shape: number, rnd: () => number): number {
  if (shape < 1) return sampleGamma(shape + 1, rnd) * Math.pow(rnd() || Number.MIN_VALUE, 1 / shape);
  const d = shape - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number;
    let v: number;
    do {
      // Box–Muller normal
      const u1 = rnd() || Number.MIN_VALUE;
      const u2 = rnd();
      x = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const u = rnd() || Number.MIN_VALUE;
    if (Math.log(u) < 0.5 * x * x + d - d * v + d * Math.log(v)) return d * v;
  }
}

/** Φ(z), the standard normal CDF. */
export function normalCdf(z: number): number {
  // Abramowitz–Stegun 7.1.26 on erf(z/√2).
  const x = Math.abs(z) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * x);
  const erf = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-x * x);
  return z >= 0 ? 0.5 * (1 + erf) : 0.5 * (1 - erf);
}
