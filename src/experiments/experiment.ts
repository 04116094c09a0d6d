/**
 * One closed-loop experiment, keyed by (name, model), as a sidecar's view
 * of the shared state: its generation (a changed base prompt starts a new
 * one), the variants it tries with their counted outcomes, the reserve of
 * screened candidates, and the policy that serves and prunes them. Pure
 * state, no I/O and no clock: every decision is a function of the outcomes
 * counted, so a simulation replays the same way.
 *
 * The store holds the truth (store/experimentRecords.ts). A view changes
 * only through its methods: `adopt` takes a snapshot read from the store,
 * `recordTotals` the counts a write or a refresh returned (counts only
 * grow, so the larger wins, in any order). Decisions are computed, not
 * applied: the decider writes them and adopts what the store then holds.
 *
 * The policy, judged by the experiment's objective (objective.ts: success,
 * a graded score, or a reward that weighs cost; with latency and cost
 * constraints):
 *  - serving: Thompson sampling over the active variants, each a posterior
 *    of its value whose prior is the scorer's prediction worth
 *    `priorStrength` pseudo-outcomes, plus its neighbours' by meaning (the
 *    decider's prompt vectors; `neighbourPrior`); a newcomer first gets
 *    `warmup` servings;
 *  - retirement: a variant whose chance of beating the leader falls below
 *    `retireBelow` (after `minSamples` outcomes) stops being served;
 *  - guardrail: a variant worse than the base with `guardConfidence`, or
 *    breaking a constraint with that confidence, is banned and never
 *    served again;
 *  - leader: the best posterior mean with enough outcomes, changed only
 *    when the challenger beats the current leader with `leaderConfidence`;
 *  - proposals: the pool is refilled (screened candidates from the
 *    reserve first, then a new batch) when a variant left and
 *    `refillAfter` outcomes passed since the last batch (twice as many
 *    after each batch in a row that brought nothing new, up to
 *    2^MAX_REFILL_DOUBLINGS times), up to `maxVariants` per generation;
 *    the reserve ranked by what the nearest
 *    measured variants achieved, by meaning (embeddings, a kernel of width
 *    `neighbourBandwidth`) or, without vectors, by wording.
 */
import { betaOf, pBestBy, sampleBeta, sampleNormal, thompsonPick, type Beta } from '../optimizer/bandit.js';
import { hashSeed, seededRandom } from '../random.js';
import { cosine, meaningKernel, neighbourEstimate, NEIGHBOUR_DEFAULTS } from '../learning/embeddings.js';
import type { ExperimentChange, ExperimentCounts, ExperimentKey, ExperimentSnapshot, ExperimentStatus, HistoryEntry, VariantOrigin, VariantRow, VariantState } from '../store/experimentRecords.js';
import { brokenConstraint, DEFAULT_OBJECTIVE, estimate, measuredValue, NO_TOTALS, pGreater, smoothedRate, TOTALS_KEYS, type Estimate, type Objective, type VariantTotals } from './objective.js';

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
  /** Variants per generation, base included (screened candidates in reserve not counted). */
  maxVariants: number;
  /** Screened candidates kept in reserve per experiment. */
  maxReserve: number;
  /** Pseudo-outcomes the scorer's prediction is worth in a variant's prior. */
  priorStrength: number;
  /** A challenger becomes the leader when it beats the current one with this confidence (hysteresis: no flapping). */
  leaderConfidence: number;
  /** Measured variants a candidate is compared with when the reserve is ranked. */
  neighbourK: number;
  /** Weight of the scorer's prediction beside the measured neighbours when ranking the reserve. */
  scorerWeight: number;
  /**
   * How neighbours are found: above 0, by meaning (prompt embeddings; a
   * neighbour at cosine c weighs exp(−(1 − c) / neighbourBandwidth)), which
   * also gives a newcomer a prior from its neighbours and keeps
   * near-duplicates of known variants out; 0, by wording (word-bigram
   * Jaccard), also the fallback when no embedding is at hand.
   */
  neighbourBandwidth: number;
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
  maxReserve: 72,
  priorStrength: 2,
  leaderConfidence: 0.9,
  neighbourK: 5,
  scorerWeight: 0.5,
  neighbourBandwidth: 0.05,
  warmup: 6,
};

/** A prompt's embedding by prompt id, when one is at hand (the decider's PromptVectors). */
export type VectorOf = (promptId: string) => Float32Array | undefined;

export interface Variant extends Readonly<VariantTotals> {
  readonly id: string;
  readonly text: string;
  readonly origin: VariantOrigin;
  /** The scorer's prediction when the variant entered (null for the base when no scorer answered). */
  readonly predicted: number | null;
  readonly priorAlpha: number;
  readonly priorBeta: number;
  readonly state: Exclude<VariantState, 'reserve'>;
}

/** A variant's mutable fields, written only by `Experiment`. */
type VariantCell = { -readonly [K in keyof Variant]: Variant[K] };

export interface Candidate {
  id: string;
  text: string;
  origin: VariantOrigin;
  predicted: number | null;
  /** Its promise for ordering the reserve when it differs from the prediction (a long candidate costs more under a reward weighing tokens). */
  rank?: number | null;
  /** What its measured neighbours by meaning achieved when it was screened, worth `strength` outcomes in its prior. */
  neighbours?: { mean: number; strength: number };
}

/** A candidate's promise when a batch is screened: its rank, else the scorer's prediction. */
const promise = (c: Candidate): number => c.rank ?? c.predicted ?? 0.5;

export type Decision =
  /** `constraint`: a ban for breaking one (else, for being worse than `against`). */
  | { kind: 'retired' | 'banned'; variant: Variant; against: Variant; confidence: number; constraint?: string }
  | { kind: 'leader'; from: Variant; to: Variant; improvement: number; confidence: number };

/** A measured variant as the reserve's ranking reads it: its rate under the objective, and what its outcomes make it worth. */
export interface MeasuredRate {
  rate: number;
  weight: number;
}

/** What a measured variant's rate weighs by its outcomes: near 0 for a handful (its rate is mostly noise), near 1 past a few dozen. */
export const measuredWeight = (count: number): number => count / (count + 10);

/** Outcomes a variant needs before its rate informs the ranking of its neighbours. */
export const MIN_NEIGHBOUR_OUTCOMES = 5;

/** The measured variants' rates pooled by weight: what a candidate with no near neighbour is shrunk to. */
export function pooledRate(measured: readonly MeasuredRate[]): number {
  return measured.reduce((a, m) => a + m.rate * m.weight, 0) / measured.reduce((a, m) => a + m.weight, 0);
}

/**
 * A candidate's promise, the order of the reserve: what its `neighbourK`
 * most similar measured variants achieved (`sims[i]` its similarity to
 * `measured[i]`), weighted by similarity and outcomes and shrunk to
 * `overall`, plus the scorer's prediction (centred) times `scorerWeight`.
 * Pure, so the offline evaluation ranks a task's unmeasured templates
 * exactly as the loop ranks its reserve.
 */
export function reserveEstimate(sims: readonly number[], measured: readonly MeasuredRate[], overall: number, predicted: number | null, policy: Pick<LoopPolicy, 'neighbourK' | 'scorerWeight'>): number {
  const nearest = sims
    .map((sim, i) => ({ m: measured[i]!, sim }))
    .sort((a, b) => b.sim - a.sim)
    .slice(0, policy.neighbourK);
  let num = 0.5 * overall;
  let den = 0.5;
  for (const { m, sim } of nearest) {
    const w = sim * m.weight * 4;
    num += w * m.rate;
    den += w;
  }
  return num / den + policy.scorerWeight * ((predicted ?? 0.5) - 0.5);
}

/** A variant's prior as a Beta. */
export const priorBeta = (v: Variant): Beta => ({ alpha: v.priorAlpha, beta: v.priorBeta });
/** The Beta posterior of a variant's success rate (whatever the objective). */
export const posteriorOf = (v: Variant): Beta => betaOf(priorBeta(v), v);
export const successRate = (v: Variant): number => (v.count === 0 ? 0 : v.successes / v.count);

/** A variant's prior from its scorer prediction (the base: uniform). */
export function priorOf(c: Candidate, policy: LoopPolicy): { priorAlpha: number; priorBeta: number } {
  if (c.origin === 'base') return { priorAlpha: 1, priorBeta: 1 };
  // The scorer's prediction worth priorStrength outcomes, plus what the neighbours by meaning achieved worth theirs.
  const p = c.predicted ?? 0.5;
  const s = policy.priorStrength;
  const n = c.neighbours ?? { mean: 0.5, strength: 0 };
  return { priorAlpha: 1 + s * p + n.strength * n.mean, priorBeta: 1 + s * (1 - p) + n.strength * (1 - n.mean) };
}

/** A candidate as the row the store keeps. */
export function variantRow(c: Candidate, policy: LoopPolicy, state: VariantState, rank: number | null = null): Omit<VariantRow, keyof VariantTotals> {
  const prior = priorOf(c, policy);
  return { prompt_id: c.id, text: c.text, origin: c.origin, prior_alpha: prior.priorAlpha, prior_beta: prior.priorBeta, predicted: c.predicted, state, rank };
}

/**
 * A proposer that brought nothing new (every text known, or meaning what a
 * known one means) is asked again after twice as many outcomes each time, at
 * most this many doublings (16 × `refillAfter`): an LLM that has run dry on a
 * base is not paid, nor a batch screened and written, every `refillAfter`
 * outcomes for nothing. A batch with something new asks at `refillAfter` again.
 */
export const MAX_REFILL_DOUBLINGS = 4;

export class Experiment {
  private readonly cells = new Map<string, VariantCell>();
  /** Screened candidates not yet in the pool, most promising first. */
  private reserveList: Array<Candidate & { rank: number | null }> = [];
  private statusValue: ExperimentStatus = 'running';
  private pinnedId: string | undefined;
  private proposals = 0;
  private outcomesAtLastBatch = 0;
  /** Proposal batches in a row that brought nothing new (this decider's economy, not shared state: a new decider starts at 0). */
  private emptyBatches = 0;
  private leaderId: string;
  private revisionValue = 0;
  private objectiveValue: Objective = DEFAULT_OBJECTIVE;
  /** Warm-up servings handed out per variant (outcomes may arrive later than choices). */
  private readonly servedSince = new Map<string, number>();
  private readonly rnd: () => number;

  constructor(
    readonly name: string,
    readonly model: string,
    readonly generation: number,
    base: Candidate,
    readonly policy: LoopPolicy,
    objective: Objective = DEFAULT_OBJECTIVE,
  ) {
    this.objectiveValue = objective;
    this.cells.set(base.id, { id: base.id, text: base.text, origin: 'base', predicted: base.predicted, ...priorOf(base, policy), ...NO_TOTALS, state: 'active' });
    this.leaderId = base.id;
    this.baseId = base.id;
    this.rnd = seededRandom(hashSeed(`${name}\u0000${model}\u0000${generation}`));
  }

  readonly baseId: string;

  /** A view of what the store holds. */
  static fromSnapshot(s: ExperimentSnapshot, policy: LoopPolicy): Experiment {
    const baseRow = s.variants.find((v) => v.prompt_id === s.row.base_prompt_id);
    const base: Candidate = baseRow === undefined ? { id: s.row.base_prompt_id, text: '', origin: 'base', predicted: null } : { id: baseRow.prompt_id, text: baseRow.text, origin: 'base', predicted: baseRow.predicted };
    const exp = new Experiment(s.row.name, s.row.model, s.row.generation, base, policy);
    exp.adopt(s);
    return exp;
  }

  /** Its key in the view (built once: the hot path looks it up per request). */
  get key(): string {
    return (this.keyValue ??= experimentKey(this.name, this.model));
  }
  private keyValue: string | undefined;

  get variants(): ReadonlyMap<string, Variant> {
    return this.cells;
  }

  get base(): Variant {
    return this.cells.get(this.baseId)!;
  }

  get status(): ExperimentStatus {
    return this.statusValue;
  }

  get pinned(): string | undefined {
    return this.pinnedId;
  }

  get proposalsMade(): number {
    return this.proposals;
  }

  /** What this generation optimizes. */
  get objective(): Objective {
    return this.objectiveValue;
  }

  /** The posterior of a variant's value under the objective. */
  estimate(v: Variant): Estimate {
    return estimate(this.objectiveValue, priorBeta(v), v);
  }

  /** A variant's value under the objective as measured (no prior). */
  value(v: Variant): number {
    return measuredValue(this.objectiveValue, v);
  }

  /** P(a's value > b's) under the objective. */
  pBetter(a: Variant, b: Variant): number {
    return pGreater(this.estimate(a), this.estimate(b));
  }

  /** The store's revision of the state this view holds. */
  get revision(): number {
    return this.revisionValue;
  }

  get reserve(): readonly Candidate[] {
    return this.reserveList;
  }

  /** Outcomes counted for this generation's variants. */
  get outcomes(): number {
    let n = 0;
    for (const v of this.cells.values()) n += v.count;
    return n;
  }

  /** Successes counted for this generation's variants. */
  get successes(): number {
    let n = 0;
    for (const v of this.cells.values()) n += v.successes;
    return n;
  }

  /**
   * Whether the history is due a snapshot of the counts, the last one taken
   * at `lastAt` outcomes: every 25 outcomes at first, then every 2% (a
   * million outcomes make a few hundred lines).
   */
  historyDue(lastAt: number): boolean {
    return this.outcomes >= lastAt + Math.max(25, Math.floor(lastAt / 50));
  }

  /** A history line: the counts now, or a decision about `promptId`. */
  historyEntry(kind: HistoryEntry['kind'], promptId: string | null = null): HistoryEntry {
    return {
      kind,
      prompt_id: promptId,
      outcomes: this.outcomes,
      successes: this.successes,
      variants: kind === 'snapshot' ? Object.fromEntries([...this.cells.values()].filter((v) => v.count > 0).map((v) => [v.id, v.count])) : null,
    };
  }

  get active(): Variant[] {
    return [...this.cells.values()].filter((v) => v.state === 'active');
  }

  get leader(): Variant {
    return this.cells.get(this.leaderId) ?? this.base;
  }

  /** The variant to serve now, and whether it is an exploration (not the leader). */
  choose(): { variant: Variant; exploring: boolean } {
    if (this.pinnedId !== undefined) {
      const v = this.cells.get(this.pinnedId);
      if (v !== undefined) return { variant: v, exploring: false };
    }
    if (this.statusValue === 'stopped') return { variant: this.leader, exploring: false };
    const active = this.active;
    if (active.length === 0) return { variant: this.leader, exploring: false };
    // A newcomer is measured before it competes: it is served until it has `warmup` outcomes.
    if (this.policy.warmup > 0) {
      let newest: VariantCell | undefined;
      for (const v of active) if (v.count < this.policy.warmup && (newest === undefined || v.count < newest.count)) newest = v as VariantCell;
      if (newest !== undefined && (this.servedSince.get(newest.id) ?? 0) <= newest.count) {
        this.servedSince.set(newest.id, (this.servedSince.get(newest.id) ?? 0) + 1);
        return { variant: newest, exploring: newest.id !== this.leaderId };
      }
    }
    const best = this.thompson(active, this.rnd);
    return { variant: best, exploring: best.id !== this.leaderId };
  }

  /** Thompson sampling by the objective: exact Beta draws for success and score, Normal draws for a reward. */
  private thompson(vs: readonly Variant[], rnd: () => number): Variant {
    if (this.objectiveValue.kind === 'success') return thompsonPick(vs, posteriorOf, rnd);
    return thompsonPick(vs, (v) => this.estimate(v).beta ?? { alpha: 1, beta: 1 }, rnd, undefined, this.objectiveValue.kind === 'reward' ? (v) => this.draw(v, rnd) : undefined);
  }

  private draw(v: Variant, rnd: () => number): number {
    const e = this.estimate(v);
    return e.beta !== undefined ? sampleBeta(e.beta.alpha, e.beta.beta, rnd) : e.mean + Math.sqrt(e.variance) * sampleNormal(rnd);
  }

  /**
   * A variant's counts as the store returned them after a write or a
   * refresh. Counts only grow, so the larger of two readings is the newer:
   * readings may arrive in any order. Returns whether anything moved.
   */
  recordTotals(promptId: string, t: VariantTotals): boolean {
    const v = this.cells.get(promptId);
    // Executions and graded observations both only grow: a reading with neither further is not newer.
    if (v === undefined || t.count < v.count || t.scored < v.scored || (t.count === v.count && t.scored === v.scored)) return false;
    for (const k of TOTALS_KEYS) v[k] = t[k];
    return true;
  }

  /** One outcome counted here only (written to the journal while the database is away); the store's totals replace it later. */
  recordOutcome(promptId: string, delta: VariantTotals): boolean {
    const v = this.cells.get(promptId);
    if (v === undefined) return false;
    for (const k of TOTALS_KEYS) v[k] += delta[k];
    return true;
  }

  /**
   * Take the state the store holds for this generation: variants (new ones
   * with their texts), states, leader, status, pin, batch trigger, reserve
   * and revision; counts only where they grew. A snapshot of an older
   * revision than this view's gives its counts only.
   */
  adopt(s: ExperimentSnapshot): void {
    if (s.row.generation !== this.generation) return;
    // A reading older than what this view holds (two reads of one experiment answered out of order): its
    // counts where they grew, never its states, pin or leader, which would undo a newer change until the next notice.
    if (s.row.revision < this.revisionValue) {
      for (const r of s.variants) if (r.state !== 'reserve') this.recordTotals(r.prompt_id, r);
      return;
    }
    const reserve: Array<Candidate & { rank: number | null }> = [];
    for (const r of s.variants) {
      if (r.state === 'reserve') {
        if (!this.cells.has(r.prompt_id)) reserve.push({ id: r.prompt_id, text: r.text, origin: r.origin, predicted: r.predicted, rank: r.rank });
        continue;
      }
      let v = this.cells.get(r.prompt_id);
      if (v === undefined)
        this.cells.set(r.prompt_id, (v = { id: r.prompt_id, text: r.text, origin: r.origin, predicted: r.predicted, priorAlpha: r.prior_alpha, priorBeta: r.prior_beta, ...NO_TOTALS, state: r.state }));
      v.state = r.state;
      this.recordTotals(r.prompt_id, r);
    }
    this.reserveList = reserve.sort((a, b) => promise(b) - promise(a));
    this.applyRow(s.row);
  }

  /**
   * A refresh: counts always (where they grew); states and the row only when
   * the store's revision is not older than this view's. Returns whether the
   * view lacks something only a full snapshot has (a new variant's text, a
   * new generation, a newer revision).
   */
  refresh(c: ExperimentCounts): { needsSnapshot: boolean; moved: boolean } {
    if (c.row.generation !== this.generation || c.row.revision > this.revisionValue) return { needsSnapshot: true, moved: false };
    let moved = false;
    for (const k of c.counts) {
      if (k.state === 'reserve') continue;
      if (!this.cells.has(k.prompt_id)) return { needsSnapshot: true, moved };
      moved = this.recordTotals(k.prompt_id, k) || moved;
    }
    return { needsSnapshot: false, moved };
  }

  private applyRow(row: ExperimentSnapshot['row']): void {
    this.statusValue = row.status;
    this.pinnedId = row.pinned_prompt_id ?? undefined;
    this.proposals = row.proposals_made;
    this.outcomesAtLastBatch = row.outcomes_at_last_batch;
    this.revisionValue = row.revision;
    this.objectiveValue = row.objective;
    // An experiment stored before the leader was (older installations): the best by the rule, once.
    this.leaderId = row.leader_prompt_id !== null && this.cells.has(row.leader_prompt_id) ? row.leader_prompt_id : this.bestByMean().id;
  }

  private bestByMean(): Variant {
    let best = this.base;
    for (const v of this.cells.values()) {
      if (v.state === 'banned' || v.count < this.policy.minSamples) continue;
      if (best.count < this.policy.minSamples || this.estimate(v).mean > this.estimate(best).mean) best = v;
    }
    return best;
  }

  /**
   * What the policy decides now (a leader change, retirements, bans), not
   * applied: the decider writes them and adopts the store's state. Nothing
   * while stopped; the pinned variant is the operator's and is left alone.
   */
  decisions(): Decision[] {
    if (this.statusValue === 'stopped') return [];
    const out: Decision[] = [];
    const p = this.policy;
    const current = this.leader;
    const next = this.bestByMean();
    let leader = current;
    if (next.id !== current.id) {
      const confidence = this.pBetter(next, current);
      if (current.count < p.minSamples || current.state === 'banned' || confidence >= p.leaderConfidence) {
        out.push({ kind: 'leader', from: current, to: next, improvement: this.value(next) - this.value(current), confidence });
        leader = next;
      }
    }
    for (const v of this.active) {
      if (v === leader || v.id === this.pinnedId || v.count < p.minSamples) continue;
      const broken = brokenConstraint(this.objectiveValue, v, p.guardConfidence);
      if (broken !== undefined) {
        out.push({ kind: 'banned', variant: v, against: this.base, confidence: broken.confidence, constraint: broken.constraint });
        continue;
      }
      if (v.id !== this.baseId && this.base.count >= p.minSamples) {
        const worse = 1 - this.pBetter(v, this.base);
        if (worse >= p.guardConfidence) {
          out.push({ kind: 'banned', variant: v, against: this.base, confidence: worse });
          continue;
        }
      }
      const beats = this.pBetter(v, leader);
      if (beats < p.retireBelow) out.push({ kind: 'retired', variant: v, against: leader, confidence: 1 - beats });
    }
    return out;
  }

  /**
   * Serve as if these decisions were in the store already: they only stop
   * serving a variant or move the leader, so the decider need not wait for
   * their write (it adopts what the store then holds, or reloads when the
   * write failed). A new variant is never served before the store has it.
   */
  assume(decisions: readonly Decision[]): void {
    for (const d of decisions) {
      if (d.kind === 'leader') this.leaderId = d.to.id;
      else {
        const v = this.cells.get(d.variant.id);
        if (v !== undefined && v.state === 'active') v.state = d.kind;
      }
    }
  }

  /** How many candidates the pool has room for now (0 = no proposals wanted). */
  wantsProposals(): number {
    if (!proposing(this.statusValue, this.pinnedId ?? null)) return 0;
    const room = poolRoom(this.policy, this.active.length, this.cells.size);
    if (room <= 0) return 0;
    // Admissions from the reserve wait `refillAfter` outcomes; a new batch after empty ones waits longer.
    const wait = this.reserveList.length > 0 ? this.policy.refillAfter : this.policy.refillAfter * 2 ** this.emptyBatches;
    if (this.proposals > 0 && this.outcomes - this.outcomesAtLastBatch < wait) return 0;
    return room;
  }

  /** What a proposal batch brought: `fresh` candidates not known before (0: the proposer has run dry, for now). */
  noteBatch(fresh: number): void {
    this.emptyBatches = fresh > 0 ? 0 : Math.min(this.emptyBatches + 1, MAX_REFILL_DOUBLINGS);
  }

  /**
   * Up to `room` candidates of the reserve, most promising first: once
   * variants have measured outcomes, a candidate's promise is what its
   * nearest measured neighbours (by meaning when `vectorOf` has their
   * vectors, else by wording) achieved, blended with the scorer's
   * prediction. Nothing changes until the store has them.
   */
  fromReserve(room: number, vectorOf?: VectorOf): Candidate[] {
    if (room <= 0 || this.reserveList.length === 0) return [];
    const ranked = this.reserveList.length > 1 ? this.ranked(this.reserveList, vectorOf) : this.reserveList;
    return ranked.filter((c) => !this.cells.has(c.id)).slice(0, room);
  }

  /**
   * A new screened batch: the fresh candidates, the reserve they join
   * (capped at `maxReserve`, most promising kept) and what enters the pool
   * now (`room`), as the change the store applies.
   */
  batchChange(candidates: readonly Candidate[], room: number, vectorOf?: VectorOf): ExperimentChange {
    const seen = new Set([...this.cells.keys(), ...this.reserveList.map((c) => c.id)]);
    const fresh = candidates.filter((c) => !seen.has(c.id) && seen.add(c.id));
    const byPrediction = [...this.reserveList, ...fresh].sort((a, b) => promise(b) - promise(a));
    const ranked = byPrediction.length > 1 && room > 0 ? this.ranked(byPrediction, vectorOf) : byPrediction;
    const admit = new Set(ranked.slice(0, Math.max(0, room)).map((c) => c.id));
    const keep = new Set([...admit, ...byPrediction.filter((c) => !admit.has(c.id)).slice(0, this.policy.maxReserve).map((c) => c.id)]);
    return {
      add: fresh.filter((c) => keep.has(c.id)).map((c) => variantRow(c, this.policy, admit.has(c.id) ? 'active' : 'reserve', c.rank ?? null)),
      moves: this.reserveList.filter((c) => admit.has(c.id)).map((c) => ({ prompt_id: c.id, from: ['reserve'] as const, to: 'active' as const })),
      fields: { proposals_made: this.proposals + 1, outcomes_at_last_batch: this.outcomes },
      history: [...admit].map((id) => this.historyEntry('admitted', id)),
    };
  }

  /** Candidates of the reserve entering the pool, as the change the store applies. */
  admitChange(chosen: readonly Candidate[]): ExperimentChange {
    return {
      moves: chosen.map((c) => ({ prompt_id: c.id, from: ['reserve'] as const, to: 'active' as const })),
      fields: { outcomes_at_last_batch: this.outcomes },
      history: chosen.map((c) => this.historyEntry('admitted', c.id)),
    };
  }

  /** A measured variant's rate under the objective: smoothed success for `success`, else its estimated value. */
  private rate(v: Variant): number {
    return this.objectiveValue.kind === 'success' ? smoothedRate(v.successes, v.count) : this.estimate(v).mean;
  }

  /** Variants with outcomes enough to be a candidate's neighbour. */
  private measured(): Variant[] {
    return [...this.cells.values()].filter((v) => v.count >= MIN_NEIGHBOUR_OUTCOMES);
  }

  /** Whether neighbours are found by meaning now: the policy says so and every measured variant has a vector. */
  private byMeaning(vectorOf: VectorOf | undefined, measured: readonly Variant[]): vectorOf is VectorOf {
    return this.policy.neighbourBandwidth > 0 && vectorOf !== undefined && measured.every((v) => vectorOf(v.id) !== undefined);
  }

  /**
   * Candidates by promise: what their nearest measured neighbours achieved
   * (by meaning when vectors are at hand, else by wording), shrunk to the
   * measured variants' mean and blended with the scorer.
   */
  private ranked<C extends Candidate>(candidates: readonly C[], vectorOf?: VectorOf): C[] {
    const variants = this.measured();
    if (variants.length === 0) return [...candidates];
    const measured = variants.map((v) => ({ rate: this.rate(v), weight: measuredWeight(v.count) }));
    const overall = pooledRate(measured);
    let similarity: (c: Candidate) => number[];
    if (this.byMeaning(vectorOf, variants)) {
      const h = this.policy.neighbourBandwidth;
      const vecs = variants.map((v) => vectorOf(v.id)!);
      similarity = (c) => {
        const mine = vectorOf(c.id);
        return mine === undefined ? vecs.map(() => 0) : vecs.map((u) => meaningKernel(cosine(mine, u), h));
      };
    } else {
      const grams = variants.map((v) => wordGrams(v.text));
      similarity = (c) => {
        const mine = wordGrams(c.text);
        return grams.map((g) => Math.pow(jaccard(mine, g), 2));
      };
    }
    return candidates
      .map((c) => ({ c, e: reserveEstimate(similarity(c), measured, overall, c.predicted, this.policy) }))
      .sort((a, b) => b.e - a.e)
      .map((x) => x.c);
  }

  /**
   * A newcomer's prior from its measured neighbours by meaning (success and
   * score objectives, where a value is a rate): their rates kernel-weighted
   * by cosine, shrunk to the pooled rate, worth at most a few outcomes
   * (learning/embeddings.ts, neighbourEstimate). Undefined when neighbours are
   * not found by meaning or none is measured.
   */
  neighbourPrior(vector: Float32Array, vectorOf: VectorOf): { mean: number; strength: number } | undefined {
    if (this.objectiveValue.kind === 'reward') return undefined;
    const variants = this.measured();
    if (variants.length === 0 || !this.byMeaning(vectorOf, variants)) return undefined;
    const e = neighbourEstimate(
      vector,
      variants.map((v) => ({ embedding: vectorOf(v.id)!, successes: this.rate(v) * v.count, count: v.count })),
      { ...NEIGHBOUR_DEFAULTS, bandwidth: this.policy.neighbourBandwidth },
    );
    return { mean: e.mean, strength: e.strength };
  }

  /** Monte Carlo P(best) of each non-banned variant (seeded, for the `experiment` op). */
  pBest(draws = 2000): Map<string, number> {
    const vs = [...this.cells.values()].filter((v) => v.state !== 'banned');
    const rnd = seededRandom(hashSeed(`pbest\u0000${this.key}\u0000${this.outcomes}`));
    return new Map([...pBestBy(vs, (v) => this.draw(v, rnd), draws)].map(([v, p]) => [v.id, p]));
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

/**
 * The decisions that still hold against the store's state (a variant still
 * active, the leader still the one replaced), as the change the store
 * applies; `applied` are the decisions it carries.
 */
export function decisionChange(s: ExperimentSnapshot, decisions: readonly Decision[]): { change: ExperimentChange; applied: Decision[] } {
  const state = new Map(s.variants.map((v) => [v.prompt_id, v.state]));
  const change: ExperimentChange = {};
  const applied: Decision[] = [];
  // An operator's stop or pin that committed after the decisions were made: the loop leaves what the operator holds alone.
  if (s.row.status === 'stopped') return { change, applied };
  for (const d of decisions) {
    if (d.kind === 'leader') {
      if (s.row.leader_prompt_id !== null && s.row.leader_prompt_id !== d.from.id) continue;
      change.fields = { leader_prompt_id: d.to.id };
    } else {
      if (state.get(d.variant.id) !== 'active' || d.variant.id === s.row.pinned_prompt_id) continue;
      (change.moves ??= []).push({ prompt_id: d.variant.id, from: ['active'], to: d.kind });
    }
    applied.push(d);
  }
  return { change, applied };
}

/** Whether an experiment in this state takes new candidates (stopped: nothing more; pinned: the operator serves one variant). */
export const proposing = (status: ExperimentStatus, pinned: string | null): boolean => status !== 'stopped' && pinned === null;

/** How many more variants the pool takes: `active` served now, `variants` of the generation outside the reserve (the cap per generation). */
export const poolRoom = (policy: Pick<LoopPolicy, 'poolSize' | 'maxVariants'>, active: number, variants: number): number =>
  Math.max(0, Math.min(policy.poolSize - active, policy.maxVariants - variants));

/**
 * The room in the store's locked state: what a write may admit, whatever the view it was prepared on held;
 * `freed`: the variants the same write takes out of the pool (its retirements and bans).
 */
export const roomIn = (policy: Pick<LoopPolicy, 'poolSize' | 'maxVariants'>, s: { variants: ReadonlyArray<{ state: string }> }, freed = 0): number =>
  poolRoom(policy, s.variants.filter((v) => v.state === 'active').length - freed, s.variants.filter((v) => v.state !== 'reserve').length);

export const experimentKey = (name: string, model: string): string => `${name}\u0000${model}`;

/** The name and model an `experimentKey` was made of. */
export function keyParts(key: string): ExperimentKey {
  const [name, model] = key.split('\u0000') as [string, string];
  return { name, model };
}
