/**
 * Bandit maths for choosing among prompt variants from tracked outcomes:
 * Beta posteriors and Thompson sampling. Used by `select_variant` and by
 * the closed loop's experiments. Written by hand: it is twenty lines and
 * must run seeded (a simulation replays the same way).
 */

export interface Outcomes {
  successes: number;
  count: number;
}

export interface ThompsonDraw {
  id: string;
  alpha: number;
  beta: number;
  draw: number;
}

/** One Thompson draw per variant from Beta(prior + outcomes); the highest draw wins. */
export function thompson(ids: readonly string[], outcomes: ReadonlyMap<string, Outcomes>, rnd: () => number, prior: { alpha: number; beta: number } = { alpha: 1, beta: 1 }): { chosen: string; draws: ThompsonDraw[] } {
  let chosen = ids[0]!;
  let best = -1;
  const draws: ThompsonDraw[] = [];
  for (const id of ids) {
    const h = outcomes.get(id) ?? { successes: 0, count: 0 };
    const alpha = prior.alpha + h.successes;
    const beta = prior.beta + h.count - h.successes;
    const draw = sampleBeta(alpha, beta, rnd);
    draws.push({ id, alpha, beta, draw });
    if (draw > best) {
      best = draw;
      chosen = id;
    }
  }
  return { chosen, draws };
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

