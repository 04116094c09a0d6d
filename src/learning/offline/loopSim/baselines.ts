/**
 * Baselines of the closed-loop benchmark, on the same groups, rounds and
 * Bernoulli draws as the engine: always the original prompt, and plain
 * Thompson sampling (uniform priors, no proposals, no scorer) over k random
 * paraphrases of the task; for graded outcomes (`bench:loop --graded`),
 * plain Gaussian Thompson sampling on the reward, and the reward's scoreboard.
 */
import { thompson } from '../../../optimizer/bandit.js';
import type { Group } from './world.js';

export function alwaysOriginal(g: Group, rounds: number): number[] {
  return new Array<number>(rounds).fill(g.baseAcc);
}

export function plainThompson(g: Group, k: number, rounds: number, rnd: () => number): number[] {
  const texts = [...g.accOf.keys()].filter((t) => t !== g.task.base.text);
  for (let i = texts.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [texts[i], texts[j]] = [texts[j]!, texts[i]!];
  }
  const arms = texts.slice(0, k);
  const outcomes = new Map(arms.map((t) => [t, { successes: 0, count: 0 }]));
  const served: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const { chosen } = thompson(arms, outcomes, rnd);
    const acc = g.accOf.get(chosen)!;
    const o = outcomes.get(chosen)!;
    o.count++;
    if (rnd() < acc) o.successes++;
    served.push(acc);
  }
  return served;
}

export interface GroupScore {
  task: string;
  model: string;
  /** Best accuracy in the task's pool minus the mean accuracy served in the last 100 rounds. */
  regret: number;
  /** Mean accuracy served over all rounds minus the base's. */
  gain: number;
}

export function score(g: Group, served: readonly number[]): GroupScore {
  const last = served.slice(-100);
  const mean = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
  return { task: g.task.name, model: g.model, regret: g.bestAcc - mean(last), gain: mean(served) - g.baseAcc };
}

export function summary(scores: readonly GroupScore[]): { groups: number; regretMedian: number; regretMean: number; gainMean: number; gainMedian: number } {
  const med = (xs: number[]): number => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  };
  const regrets = scores.map((s) => s.regret);
  const gains = scores.map((s) => s.gain);
  return { groups: scores.length, regretMedian: med(regrets), regretMean: regrets.reduce((a, b) => a + b, 0) / regrets.length, gainMean: gains.reduce((a, b) => a + b, 0) / gains.length, gainMedian: med(gains) };
}

/** A standard normal draw (Box–Muller) from a uniform source. */
function normal(rnd: () => number): number {
  const u = Math.max(rnd(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rnd());
}

/**
 * Plain Thompson sampling on a graded reward (no proposals, no scorer) over
 * k random paraphrases: each arm's mean reward drawn from a Normal around
 * its sample mean with the sample's standard error (unknown variance; a
 * pooled 0.3 until an arm has two observations; every arm tried once first).
 * `observe` returns the reward one call earns; the texts served are returned.
 */
export function plainThompsonGraded(g: Group, k: number, rounds: number, rnd: () => number, observe: (text: string) => number): string[] {
  const texts = [...g.accOf.keys()].filter((t) => t !== g.task.base.text);
  for (let i = texts.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [texts[i], texts[j]] = [texts[j]!, texts[i]!];
  }
  const arms = texts.slice(0, k).map((text) => ({ text, n: 0, sum: 0, sq: 0 }));
  const served: string[] = [];
  for (let r = 0; r < rounds; r++) {
    let pick = arms.find((a) => a.n === 0);
    if (pick === undefined) {
      let best = -Infinity;
      for (const a of arms) {
        const mean = a.sum / a.n;
        const sd = a.n < 2 ? 0.3 : Math.sqrt(Math.max((a.sq - a.n * mean * mean) / (a.n - 1), 1e-4));
        const draw = mean + (sd / Math.sqrt(a.n)) * normal(rnd);
        if (draw > best) [best, pick] = [draw, a];
      }
    }
    const y = observe(pick!.text);
    pick!.n++;
    pick!.sum += y;
    pick!.sq += y * y;
    served.push(pick!.text);
  }
  return served;
}

/** How a graded run is judged: the reward each text earns in expectation (never shown to the policy), and what it costs. */
export interface GradedWorld {
  /** Expected reward of serving `text` once in group `g`. */
  reward(g: Group, text: string): number;
  accuracy(g: Group, text: string): number;
  tokens(text: string): number;
}

export interface GradedScore {
  task: string;
  model: string;
  /** Best expected reward in the task's pool minus the mean expected reward served in the last 100 rounds. */
  rewardRegret: number;
  /** Mean expected reward over all rounds minus the base's. */
  rewardGain: number;
  /** Mean accuracy and tokens served in the last 100 rounds. */
  accuracy: number;
  tokens: number;
  /** Whether the pool's best paraphrase by accuracy is not its best by reward. */
  tradeOff: boolean;
}

export function gradedScore(g: Group, served: readonly string[], w: GradedWorld): GradedScore {
  const mean = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
  const pool = [...g.accOf.keys()];
  const byReward = pool.reduce((b, t) => (w.reward(g, t) > w.reward(g, b) ? t : b));
  const byAccuracy = pool.reduce((b, t) => (g.accOf.get(t)! > g.accOf.get(b)! ? t : b));
  const last = served.slice(-100);
  return {
    task: g.task.name,
    model: g.model,
    rewardRegret: w.reward(g, byReward) - mean(last.map((t) => w.reward(g, t))),
    rewardGain: mean(served.map((t) => w.reward(g, t))) - w.reward(g, g.task.base.text),
    accuracy: mean(last.map((t) => w.accuracy(g, t))),
    tokens: mean(last.map((t) => w.tokens(t))),
    tradeOff: w.reward(g, byAccuracy) < w.reward(g, byReward) - 1e-12,
  };
}

export function gradedSummary(scores: readonly GradedScore[]): { groups: number; regretMedian: number; regretMean: number; gainMean: number; accuracy: number; tokens: number; tradeOffShare: number } {
  const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
  const s = scores.map((x) => x.rewardRegret).sort((a, b) => a - b);
  const median = s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  return {
    groups: scores.length,
    regretMedian: median,
    regretMean: mean(s),
    gainMean: mean(scores.map((x) => x.rewardGain)),
    accuracy: mean(scores.map((x) => x.accuracy)),
    tokens: mean(scores.map((x) => x.tokens)),
    tradeOffShare: mean(scores.map((x) => (x.tradeOff ? 1 : 0))),
  };
}
