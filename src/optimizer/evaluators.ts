/**
 * COPRO evaluators: score candidate instructions.
 *
 * - `DevsetEvaluator` (real COPRO): run each candidate on devset examples
 *   through an LLM and score with the metric. Fixes COPRO's known flaws:
 *   a held-out split picks the winner (not the examples it was selected
 *   on), repeated scores of one instruction are averaged (not max'ed), and
 *   a budget caps metric calls.
 * - `LearnedEvaluator` (no devset or no LLM): the learned scorer's P(success)
 *   is the prior of a Beta posterior that the tracked outcomes of that exact
 *   prompt update, so history outweighs the model as it accumulates.
 */
import type { Outcomes } from './bandit.js';
import { createHash } from 'node:crypto';
import { chat, type LlmEndpoint } from './llmClient.js';

export interface Scored {
  score: number;
  /** 0..1: how much evidence stands behind `score`. */
  confidence: number;
}

export interface Evaluator {
  readonly kind: 'devset' | 'learned';
  /** Score on the selection data. */
  evaluate(candidates: string[], signal: AbortSignal): Promise<Scored[]>;
  /** Score on held-out data for the final pick (the learned evaluator has none: same as evaluate). */
  evaluateHeldOut(candidates: string[], signal: AbortSignal): Promise<Scored[]>;
  readonly metricCalls: number;
}

export interface DevExample {
  input: string;
  output: string;
}

export type Metric = (predicted: string, expected: string) => number;

/** Normalised exact match, or containment of the expected answer as a whole word. */
export const answerMatch: Metric = (pred, exp) => {
  const norm = (s: string): string => s.toLowerCase().replace(/[^\p{L}\p{N}\s]/gu, ' ').replace(/\s+/g, ' ').trim();
  const p = norm(pred);
  const e = norm(exp);
  if (p === e) return 1;
  return e.length > 0 && ` ${p} `.includes(` ${e} `) ? 1 : 0;
};

export class BudgetExhausted extends Error {}

export class DevsetEvaluator implements Evaluator {
  readonly kind = 'devset' as const;
  private calls = 0;
  private readonly selection: DevExample[];
  private readonly heldOut: DevExample[];
  /** instruction → every metric result so far on each split (mean, not max). */
  private readonly results = new Map<string, { sel: number[]; held: number[] }>();

  constructor(
    private readonly endpoint: LlmEndpoint,
    devset: DevExample[],
    private readonly budget: number,
    private readonly metric: Metric = answerMatch,
  ) {
    // Deterministic split: every other example held out (at least one on each side).
    this.selection = devset.filter((_, i) => i % 2 === 0);
    this.heldOut = devset.length > 1 ? devset.filter((_, i) => i % 2 === 1) : devset.slice();
  }

  get metricCalls(): number {
    return this.calls;
  }

  evaluate(candidates: string[], signal: AbortSignal): Promise<Scored[]> {
    return this.run(candidates, this.selection, 'sel', signal);
  }

  evaluateHeldOut(candidates: string[], signal: AbortSignal): Promise<Scored[]> {
    return this.run(candidates, this.heldOut, 'held', signal);
  }

  private async run(candidates: string[], examples: DevExample[], split: 'sel' | 'held', signal: AbortSignal): Promise<Scored[]> {
    const out: Scored[] = [];
    for (const instruction of candidates) {
      let r = this.results.get(instruction);
      if (r === undefined) this.results.set(instruction, (r = { sel: [], held: [] }));
      const scores = r[split];
      for (const ex of examples) {
        if (this.calls >= this.budget) break;
        this.calls++;
        const res = await chat(this.endpoint, undefined, [{ role: 'system', content: instruction }, { role: 'user', content: ex.input }], { temperature: 0 }, signal);
        scores.push(this.metric(res.texts[0] ?? '', ex.output));
      }
      const n = scores.length;
      const mean = n === 0 ? 0 : scores.reduce((a, b) => a + b, 0) / n;
      out.push({ score: mean, confidence: n === 0 ? 0 : Math.max(0, 1 - Math.sqrt((mean * (1 - mean)) / n) * 2) });
    }
    return out;
  }
}

export interface LearnedEvaluatorDeps {
  /** P(success) per instruction from the learned scorer. */
  predict(instructions: string[]): Promise<number[]>;
  /** Tracked outcomes per prompt id. */
  outcomes(promptIds: string[]): Promise<Map<string, Outcomes>>;
  /** Weight of the model's prediction, in pseudo-executions. */
  priorStrength?: number;
}

/** The id under which executions of an instruction are tracked when the caller gives none. */
export function promptIdOf(instruction: string): string {
  return `p_${createHash('sha256').update(instruction).digest('hex').slice(0, 16)}`;
}

export class LearnedEvaluator implements Evaluator {
  readonly kind = 'learned' as const;
  private calls = 0;
  constructor(private readonly deps: LearnedEvaluatorDeps) {}

  get metricCalls(): number {
    return this.calls;
  }

  async evaluate(candidates: string[]): Promise<Scored[]> {
    this.calls += candidates.length;
    const [p, hist] = await Promise.all([this.deps.predict(candidates), this.deps.outcomes(candidates.map(promptIdOf))]);
    const k = this.deps.priorStrength ?? 10;
    return candidates.map((c, i) => {
      const h = hist.get(promptIdOf(c)) ?? { successes: 0, count: 0 };
      const prior = clamp01(p[i] ?? 0.5);
      const alpha = 1 + prior * k + h.successes;
      const beta = 1 + (1 - prior) * k + (h.count - h.successes);
      const mean = alpha / (alpha + beta);
      const variance = (alpha * beta) / ((alpha + beta) ** 2 * (alpha + beta + 1));
      return { score: mean, confidence: clamp01(1 - 2 * Math.sqrt(variance)) };
    });
  }

  evaluateHeldOut(candidates: string[]): Promise<Scored[]> {
    return this.evaluate(candidates);
  }
}

const clamp01 = (x: number): number => (Number.isFinite(x) ? Math.min(1, Math.max(0, x)) : 0.5);
