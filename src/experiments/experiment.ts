/**
 * One closed-loop experiment, keyed by (name, model): its generation (a
 * changed base prompt starts a new one), the variants it tries and their
 * outcomes, and the policy that serves and prunes them. Pure state, no I/O
 * and no clock: every decision is a function of the outcomes seen, so a
 * simulation replays the same way. The service (service.ts) persists what
 * this decides and fetches proposals when `wantsProposals` says so.
 *
 * The policy:
 *  - serving: Thompson sampling over the active variants, each a Beta
 *    posterior whose prior is the scorer's prediction worth
 *    `priorStrength` pseudo-outcomes;
 *  - retirement: a variant whose chance of beating the leader falls below
 *    `retireBelow` (after `minSamples` outcomes) stops being served;
 *  - guardrail: a variant worse than the base with `guardConfidence` is
 *    banned and never served again;
 *  - proposals: the pool is refilled (screened candidates from the
 *    reserve first, then a new batch) when a variant left and
 *    `refillAfter` outcomes passed since the last batch, up to
 *    `maxVariants` per generation.
 */
import { sampleBeta } from '../optimizer/bandit.js';
import { hashSeed, seededRandom } from '../random.js';
import type { ExperimentStatus, VariantOrigin, VariantState } from '../store/experimentRecords.js';

export interface LoopPolicy {
  /** Variants served at once. */
  poolSize: number;
  /** Candidates asked of the proposer per batch (the scorer keeps the most promising). */
  batchSize: number;
  /** Outcomes a variant needs before it can be retired or banned. */
  minSamples: number;
  /** Retire a variant whose P(beats the leader) is below this. */
  retireBelow: number;
  /** Ban a variant that is worse than the base with this confidence. */
  guardConfidence: number;
  /** Outcomes since the last batch before another one is asked for. */
  refillAfter: number;
  /** Variants per generation, base included. */
  maxVariants: number;
  /** Pseudo-outcomes the scorer's prediction is worth in a variant's prior. */
  priorStrength: number;
  /** A challenger becomes the leader when it beats the current one with this confidence (hysteresis: no flapping). */
  leaderConfidence: number;
  /** Measured variants a candidate is compared with when the reserve is ranked. */
  neighbourK: number;
  /** Weight of the scorer's prediction beside the measured neighbours when ranking the reserve. */
  scorerWeight: number;
  /** Outcomes a new variant gets before it competes by Thompson sampling (0 = none). */
  warmup: number;
}

/**
 * Defaults chosen on data/multiprompt with the simulation of `npm run bench:loop`
 * (leave-tasks-out scorers; figures and the grid that chose them in BENCHMARKS.md).
 */
export const DEFAULT_POLICY: LoopPolicy = {
  poolSize: 8,
  batchSize: 24,
  minSamples: 8,
  retireBelow: 0.25,
  guardConfidence: 0.95,
  refillAfter: 50,
  maxVariants: 30,
  priorStrength: 2,
  leaderConfidence: 0.9,
  neighbourK: 5,
  scorerWeight: 0.5,
  warmup: 6,
};

export interface Variant {
  readonly id: string;
  readonly text: string;
  readonly origin: VariantOrigin;
  /** The scorer's prediction when the variant entered (null for the base when no scorer answered). */
  readonly predicted: number | null;
  readonly priorAlpha: number;
  readonly priorBeta: number;
  successes: number;
  count: number;
  state: VariantState;
}

export interface Candidate {
  id: string;
  text: string;
  origin: VariantOrigin;
  predicted: number | null;
}

export type Decision =
  | { kind: 'retired' | 'banned'; variant: Variant; against: Variant; confidence: number }
  | { kind: 'leader'; from: Variant; to: Variant; improvement: number };

export const posteriorMean = (v: Variant): number => (v.priorAlpha + v.successes) / (v.priorAlpha + v.priorBeta + v.count);
export const successRate = (v: Variant): number => (v.count === 0 ? 0 : v.successes / v.count);

/** P(a's rate > b's rate) from their Beta posteriors (normal approximation). */
export function pBetter(a: Variant, b: Variant): number {
  const na = a.priorAlpha + a.priorBeta + a.count;
  const nb = b.priorAlpha + b.priorBeta + b.count;
  const ma = posteriorMean(a);
  const mb = posteriorMean(b);
  const v = (ma * (1 - ma)) / (na + 1) + (mb * (1 - mb)) / (nb + 1);
  return normalCdf((ma - mb) / Math.sqrt(v + 1e-12));
}

function normalCdf(z: number): number {
  // Abramowitz–Stegun 7.1.26 on erf(z/√2).
  const x = Math.abs(z) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * x);
  const erf = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-x * x);
  return z >= 0 ? 0.5 * (1 + erf) : 0.5 * (1 - erf);
}

export class Experiment {
  readonly variants = new Map<string, Variant>();
  /** Screened candidates not yet in the pool, most promising first. */
  reserve: Candidate[] = [];
  status: ExperimentStatus = 'running';
  pinned: string | undefined;
  proposalsMade = 0;
  outcomes = 0;
  private outcomesAtLastBatch = 0;
  private leaderId: string;
  /** Warm-up servings handed out per variant (outcomes may arrive later than choices). */
  private readonly servedSince = new Map<string, number>();
  private readonly rnd: () => number;

  constructor(
    readonly name: string,
    readonly model: string,
    readonly generation: number,
    readonly base: Variant,
    readonly policy: LoopPolicy,
  ) {
    this.variants.set(base.id, base);
    this.leaderId = base.id;
    this.rnd = seededRandom(hashSeed(`${name}\u0000${model}\u0000${generation}`));
  }

  static variant(c: Candidate, policy: LoopPolicy, state: VariantState = 'active'): Variant {
    const p = c.predicted ?? 0.5;
    const s = c.origin === 'base' ? 0 : policy.priorStrength;
    return { id: c.id, text: c.text, origin: c.origin, predicted: c.predicted, priorAlpha: 1 + s * p, priorBeta: 1 + s * (1 - p), successes: 0, count: 0, state };
  }

  get key(): string {
    return experimentKey(this.name, this.model);
  }

  get active(): Variant[] {
    return [...this.variants.values()].filter((v) => v.state === 'active');
  }

  get leader(): Variant {
    return this.variants.get(this.leaderId)!;
  }

  /** The variant to serve now, and whether it is an exploration (not the leader). */
  choose(): { variant: Variant; exploring: boolean } {
    if (this.pinned !== undefined) {
      const v = this.variants.get(this.pinned);
      if (v !== undefined) return { variant: v, exploring: false };
    }
    if (this.status === 'stopped') return { variant: this.leader, exploring: false };
    const active = this.active;
    if (active.length === 0) return { variant: this.leader, exploring: false };
    // A newcomer is measured before it competes: it is served until it has `warmup` outcomes.
    if (this.policy.warmup > 0) {
      let newest: Variant | undefined;
      for (const v of active) if (v.count < this.policy.warmup && (newest === undefined || v.count < newest.count)) newest = v;
      if (newest !== undefined && (this.servedSince.get(newest.id) ?? 0) <= newest.count) {
        this.servedSince.set(newest.id, (this.servedSince.get(newest.id) ?? 0) + 1);
        return { variant: newest, exploring: newest.id !== this.leaderId };
      }
    }
    let best = active[0]!;
    let bestDraw = -1;
    if (active.length > 1)
      for (const v of active) {
        const d = sampleBeta(v.priorAlpha + v.successes, v.priorBeta + v.count - v.successes, this.rnd);
        if (d > bestDraw) {
          bestDraw = d;
          best = v;
        }
      }
    return { variant: best, exploring: best.id !== this.leaderId };
  }

  /** Count one outcome; returns what changed (retirements, bans, a new leader). Unknown ids change nothing. */
  observe(promptId: string, success: boolean): Decision[] {
    const v = this.variants.get(promptId);
    if (v === undefined) return [];
    v.count++;
    if (success) v.successes++;
    this.outcomes++;
    if (this.status === 'stopped') return [];
    return this.decide();
  }

  /** Restore counted outcomes (after a restart), then re-derive the leader. */
  restoreOutcomes(counts: ReadonlyMap<string, { successes: number; count: number }>): void {
    for (const [id, c] of counts) {
      const v = this.variants.get(id);
      if (v === undefined) continue;
      v.successes = c.successes;
      v.count = c.count;
      this.outcomes += c.count;
    }
    this.outcomesAtLastBatch = this.outcomes;
    this.leaderId = this.bestByMean().id;
  }

  private bestByMean(): Variant {
    let best = this.base;
    for (const v of this.variants.values()) {
      if (v.state === 'banned' || v.count < this.policy.minSamples) continue;
      if (best.count < this.policy.minSamples || posteriorMean(v) > posteriorMean(best)) best = v;
    }
    return best;
  }

  private decide(): Decision[] {
    const out: Decision[] = [];
    const p = this.policy;
    const next = this.bestByMean();
    const current = this.leader;
    if (next.id !== current.id && (current.count < p.minSamples || current.state === 'banned' || pBetter(next, current) >= p.leaderConfidence)) {
      this.leaderId = next.id;
      out.push({ kind: 'leader', from: current, to: next, improvement: successRate(next) - successRate(current) });
    }
    const leader = this.leader;
    for (const v of this.active) {
      if (v === leader || v.count < p.minSamples) continue;
      if (v !== this.base && this.base.count >= p.minSamples) {
        const worse = 1 - pBetter(v, this.base);
        if (worse >= p.guardConfidence) {
          v.state = 'banned';
          out.push({ kind: 'banned', variant: v, against: this.base, confidence: worse });
          continue;
        }
      }
      const beats = pBetter(v, leader);
      if (beats < p.retireBelow) {
        v.state = 'retired';
        out.push({ kind: 'retired', variant: v, against: leader, confidence: 1 - beats });
      }
    }
    return out;
  }

  /** How many candidates the pool has room for now (0 = no proposals wanted). */
  wantsProposals(): number {
    if (this.status === 'stopped' || this.pinned !== undefined) return 0;
    const room = Math.min(this.policy.poolSize - this.active.length, this.policy.maxVariants - this.variants.size);
    if (room <= 0) return 0;
    if (this.proposalsMade > 0 && this.outcomes - this.outcomesAtLastBatch < this.policy.refillAfter) return 0;
    return room;
  }

  /**
   * Take up to `room` candidates from the reserve into the pool, most
   * promising first: once variants have measured outcomes, a candidate's
   * promise is what its nearest measured neighbours (by wording) achieved,
   * blended with the scorer's prediction — the experiment learns which
   * wordings work for this task and model as it goes.
   */
  admitFromReserve(room: number): Variant[] {
    const added: Variant[] = [];
    if (room > 0 && this.reserve.length > 1) this.rankReserve();
    while (added.length < room && this.reserve.length > 0) {
      const c = this.reserve.shift()!;
      if (this.variants.has(c.id)) continue;
      const v = Experiment.variant(c, this.policy);
      this.variants.set(v.id, v);
      added.push(v);
    }
    if (added.length > 0) this.outcomesAtLastBatch = this.outcomes;
    return added;
  }

  private rankReserve(): void {
    const measured = [...this.variants.values()].filter((v) => v.count >= 5).map((v) => ({ grams: wordGrams(v.text), rate: (v.successes + 1) / (v.count + 2), weight: v.count / (v.count + 10) }));
    if (measured.length === 0) return;
    const overall = measured.reduce((a, m) => a + m.rate * m.weight, 0) / measured.reduce((a, m) => a + m.weight, 0);
    const k = this.policy.neighbourK;
    const estimate = (c: Candidate): number => {
      const grams = wordGrams(c.text);
      const sims = measured.map((m) => ({ m, sim: jaccard(grams, m.grams) })).sort((a, b) => b.sim - a.sim).slice(0, k);
      let num = 0.5 * overall;
      let den = 0.5;
      for (const { m, sim } of sims) {
        const w = Math.pow(sim, 2) * m.weight * 4;
        num += w * m.rate;
        den += w;
      }
      const knn = num / den;
      return knn + this.policy.scorerWeight * ((c.predicted ?? 0.5) - 0.5);
    };
    const scored = this.reserve.map((c) => ({ c, e: estimate(c) }));
    scored.sort((a, b) => b.e - a.e);
    this.reserve = scored.map((x) => x.c);
  }

  /** A new screened batch: kept in the reserve, most promising first; returns what was admitted now. */
  addBatch(candidates: readonly Candidate[], room: number): Variant[] {
    this.proposalsMade++;
    const seen = new Set([...this.variants.keys(), ...this.reserve.map((c) => c.id)]);
    const fresh = candidates.filter((c) => !seen.has(c.id) && seen.add(c.id));
    this.reserve = [...this.reserve, ...fresh].sort((a, b) => (b.predicted ?? 0.5) - (a.predicted ?? 0.5));
    this.outcomesAtLastBatch = this.outcomes;
    return this.admitFromReserve(room);
  }

  /** Monte Carlo P(best) of each non-banned variant (seeded, for the `experiment` op). */
  pBest(draws = 2000): Map<string, number> {
    const vs = [...this.variants.values()].filter((v) => v.state !== 'banned');
    const wins = new Map(vs.map((v) => [v.id, 0]));
    const rnd = seededRandom(hashSeed(`pbest\u0000${this.key}\u0000${this.outcomes}`));
    for (let i = 0; i < draws; i++) {
      let best: Variant | undefined;
      let bestDraw = -1;
      for (const v of vs) {
        const d = sampleBeta(v.priorAlpha + v.successes, v.priorBeta + v.count - v.successes, rnd);
        if (d > bestDraw) {
          bestDraw = d;
          best = v;
        }
      }
      if (best !== undefined) wins.set(best.id, wins.get(best.id)! + 1);
    }
    return new Map([...wins].map(([id, w]) => [id, w / draws]));
  }
}

function wordGrams(text: string): Set<string> {
  const words = text.toLowerCase().replace(/\{\{?[^}]*\}?\}/g, ' var ').match(/[a-z0-9:]+/g) ?? [];
  const out = new Set<string>(words);
  for (let i = 1; i < words.length; i++) out.add(`${words[i - 1]} ${words[i]}`);
  return out;
}

function jaccard(a: ReadonlySet<string>, b: ReadonlySet<string>): number {
  let inter = 0;
  for (const x of a) if (b.has(x)) inter++;
  return inter === 0 ? 0 : inter / (a.size + b.size - inter);
}

export const experimentKey = (name: string, model: string): string => `${name}\u0000${model}`;
