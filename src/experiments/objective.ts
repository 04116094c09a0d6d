/**
 * What an experiment optimizes (its objective), and how a variant's
 * outcomes are judged against it: the estimate (a posterior) of its value,
 * and the constraints it may break. Pure functions of the counts the store
 * keeps per variant (experiment_counts), no I/O.
 *
 *  - `success` (the default): the share of successful calls. A Beta
 *    posterior over the success count (the one Beta type, optimizer/bandit.ts).
 *  - `score`: the mean graded score in 0..1 (a judge's score, stars scaled
 *    to 0..1; a call without a score counts its success as 0 or 1; a late
 *    rating naming the choice counts too). A Beta posterior with fractional
 *    updates: alpha grows by the scores, beta by their complements.
 *  - `reward`: score − cost_weight × cost per call, where the cost per call
 *    is the `cost` the app reported plus input/output tokens at their
 *    per-token weights. A Normal posterior on the mean reward with the
 *    variance estimated from the outcomes (Gaussian Thompson sampling with
 *    unknown variance; score and cost treated as independent).
 *
 * Constraints ban a variant that breaks them with `confidence` (95%) like
 * the guardrail bans one worse than the base: `max_latency_ms_p90` (more
 * than 10% of its calls slower than the bound) and `max_cost_per_call` (its
 * mean cost per call above the bound).
 */
import { betaMean, betaVariance, normalCdf, pGreater, type Beta } from '../optimizer/bandit.js';
import type { Objective, VariantTotals } from '../store/experimentRecords.js';

export { DEFAULT_OBJECTIVE, NO_TOTALS, TOTALS_KEYS, type Objective, type ObjectiveKind, type VariantTotals } from '../store/experimentRecords.js';

/** A posterior of a variant's value: its mean, the variance of that mean, and how to draw from it. */
export interface Estimate {
  mean: number;
  variance: number;
  /** The Beta behind it (success and score), for exact Thompson draws. */
  beta?: Beta;
}

const mean = (sum: number, n: number): number => (n === 0 ? 0 : sum / n);
const variance = (sum: number, sq: number, n: number): number => (n < 2 ? 0 : Math.max(0, (sq - (sum * sum) / n) / (n - 1)));

/** Mean cost per call: the reported cost plus tokens at their weights. */
export function costPerCall(o: Objective, t: VariantTotals): number {
  return mean(t.cost_sum, t.cost_n) + o.input_token_cost * mean(t.tokens_in, t.tokens_n) + o.output_token_cost * mean(t.tokens_out, t.tokens_n);
}

/** The mean graded score (0 when nothing was graded). */
export const meanScore = (t: VariantTotals): number => mean(t.score_sum, t.scored);

/** The objective's value of a variant as measured (no prior): success rate, mean score, or mean reward. */
export function measuredValue(o: Objective, t: VariantTotals): number {
  if (o.kind === 'success') return mean(t.successes, t.count);
  if (o.kind === 'score') return meanScore(t);
  return meanScore(t) - o.cost_weight * costPerCall(o, t);
}

/**
 * The posterior of a variant's value. `prior` is its Beta prior (the
 * scorer's prediction worth a few pseudo-outcomes); the reward's score part
 * starts from it too, its cost part from what was measured.
 */
export function estimate(o: Objective, prior: Beta, t: VariantTotals): Estimate {
  if (o.kind === 'success') return betaEstimate({ alpha: prior.alpha + t.successes, beta: prior.beta + t.count - t.successes });
  const scored: Beta = { alpha: prior.alpha + t.score_sum, beta: prior.beta + t.scored - t.score_sum };
  if (o.kind === 'score') return betaEstimate(scored);
  const s = betaEstimate(scored);
  // The score's spread measured once there are enough outcomes (the Beta's before), the cost's from its calls.
  const scoreVar = t.scored >= 2 ? variance(t.score_sum, t.score_sq, t.scored) / (t.scored + prior.alpha + prior.beta) : s.variance;
  const costVar = t.cost_n >= 2 ? variance(t.cost_sum, t.cost_sq, t.cost_n) / t.cost_n : 0;
  return { mean: s.mean - o.cost_weight * costPerCall(o, t), variance: scoreVar + o.cost_weight * o.cost_weight * costVar };
}

const betaEstimate = (b: Beta): Estimate => ({ mean: betaMean(b), variance: betaVariance(b), beta: b });

export { pGreater };

/** A share smoothed by one hit and one miss (a few outcomes never read 0 or 1): a variant's success rate, its share of slow calls. */
export const smoothedRate = (hits: number, count: number): number => (hits + 1) / (count + 2);

/** A constraint a variant breaks with at least `confidence`, if any (the name and the confidence). */
export function brokenConstraint(o: Objective, t: VariantTotals, confidence: number): { constraint: string; confidence: number } | undefined {
  if (o.max_latency_ms_p90 !== null && t.count > 0) {
    // p90 over the bound ⇔ more than 10% of calls slower than it: one-sided, on the share of slow calls.
    const m = smoothedRate(t.over_latency, t.count);
    const p = normalCdf((m - 0.1) / Math.sqrt((m * (1 - m)) / (t.count + 3)));
    if (p >= confidence) return { constraint: `max_latency_ms_p90 ${o.max_latency_ms_p90}`, confidence: p };
  }
  if (o.max_cost_per_call !== null && t.cost_n + t.tokens_n > 0) {
    const n = Math.max(t.cost_n, t.tokens_n);
    const sd = Math.sqrt(variance(t.cost_sum, t.cost_sq, t.cost_n) / Math.max(1, n)) + 1e-9;
    const p = normalCdf((costPerCall(o, t) - o.max_cost_per_call) / sd);
    if (p >= confidence && n >= 2) return { constraint: `max_cost_per_call ${o.max_cost_per_call}`, confidence: p };
  }
  return undefined;
}

/** The objective in words, for a proposer's request ("shorter prompts cost less"). */
export function describeObjective(o: Objective): string {
  const parts = [o.kind === 'success' ? 'the share of successful answers' : o.kind === 'score' ? 'the mean graded score of the answers (0..1)' : `the mean score minus ${o.cost_weight} × the cost per call`];
  if (o.kind === 'reward' && o.input_token_cost > 0) parts.push('every token of the instruction costs: shorter instructions cost less');
  if (o.max_latency_ms_p90 !== null) parts.push(`90% of calls must answer within ${o.max_latency_ms_p90} ms`);
  if (o.max_cost_per_call !== null) parts.push(`a call may cost at most ${o.max_cost_per_call}`);
  return `What is measured: ${parts.join('; ')}.`;
}
