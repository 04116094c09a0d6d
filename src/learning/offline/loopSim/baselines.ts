/**
 * Baselines of the closed-loop benchmark, on the same groups, rounds and
 * Bernoulli draws as the engine: always the original prompt, and plain
 * Thompson sampling (uniform priors, no proposals, no scorer) over k random
 * paraphrases of the task.
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
