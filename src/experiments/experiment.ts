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
}

export const DEFAULT_POLICY: LoopPolicy = {
  poolSize: 8,
  batchSize: 24,
  minSamples: 20,
  retireBelow: 0.05,
  guardConfidence: 0.95,
  refillAfter: 50,
  maxVariants: 40,
  priorStrength: 2,
  leaderConfidence: 0.9,
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

  /** Take up to `room` candidates from the reserve into the pool (most promising first). */
  admitFromReserve(room: number): Variant[] {
    const added: Variant[] = [];
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

export const experimentKey = (name: string, model: string): string => `${name}\u0000${model}`;
