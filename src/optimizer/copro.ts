/**
 * The optimizer part: DSPy's COPRO (coordinate-ascent prompt optimization).
 * Round 0 scores the base instruction and `breadth - 1` proposals; each of
 * `depth` further rounds proposes `breadth` candidates from the current
 * best and the scored history (worst first, best last). The winner is
 * picked among the top candidates on held-out data when the evaluator has
 * any, and the base instruction always competes, so optimization never
 * returns something worse than it was given (by the evaluator's measure).
 */
import type { Evaluator, Scored } from './evaluators.js';
import type { Attempt, Proposer } from './proposers.js';
import type { OptimizeContext } from './promptBits.js';

export interface CoproParams {
  breadth: number;
  depth: number;
  initTemperature: number;
  /** How many top candidates go to the held-out pick. */
  finalists?: number;
}

export interface CandidateResult {
  instruction: string;
  score: number;
  confidence: number;
  round: number;
}

export interface CoproResult {
  base: CandidateResult;
  best: CandidateResult;
  /** Every scored candidate, best first. */
  candidates: CandidateResult[];
  metricCalls: number;
  rounds: number;
}

export const COPRO_DEFAULTS: CoproParams = { breadth: 10, depth: 3, initTemperature: 1.4 };

export class CoproOptimizer {
  constructor(
    private readonly proposer: Proposer,
    private readonly evaluator: Evaluator,
    private readonly params: CoproParams = COPRO_DEFAULTS,
    private readonly onProgress: (msg: { round: number; best: number; candidates: number }) => void = () => undefined,
  ) {}

  async optimize(base: string, context: OptimizeContext, signal: AbortSignal): Promise<CoproResult> {
    const { breadth, depth, initTemperature } = this.params;
    const scored = new Map<string, CandidateResult>();
    const add = (instructions: string[], scores: Scored[], round: number): void => {
      instructions.forEach((instruction, i) => {
        const s = scores[i]!;
        if (!scored.has(instruction)) scored.set(instruction, { instruction, score: s.score, confidence: s.confidence, round });
      });
    };
    // Best first (the COPRO-style LLM prompt lists them worst first, as COPRO does).
    const history = (): Attempt[] => [...scored.values()].sort((a, b) => b.score - a.score).map((c) => ({ text: c.instruction, score: c.score }));
    const bestSoFar = (): CandidateResult => [...scored.values()].reduce((a, b) => (b.score > a.score ? b : a));

    const first = [base, ...(await this.proposer.propose({ base, tried: [], n: Math.max(0, breadth - 1), temperature: initTemperature, round: 0, context, variables: 'kept', signal }))];
    add(first, await this.evaluator.evaluate(first, signal), 0);
    this.onProgress({ round: 0, best: bestSoFar().score, candidates: scored.size });

    let rounds = 0;
    for (let round = 1; round <= depth; round++) {
      if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new Error('aborted');
      const from = bestSoFar();
      // Cool down as rounds go: bold rewrites first, refinements later.
      const temperature = initTemperature * (1 - (round - 1) / (depth + 1));
      const proposals = (await this.proposer.propose({ base: from.instruction, tried: history().slice(0, breadth), n: breadth, temperature, round, context, variables: 'kept', signal })).filter(
        (p) => !scored.has(p),
      );
      rounds = round;
      if (proposals.length === 0) break; // nothing new to try
      add(proposals, await this.evaluator.evaluate(proposals, signal), round);
      this.onProgress({ round, best: bestSoFar().score, candidates: scored.size });
    }

    const ranked = [...scored.values()].sort((a, b) => b.score - a.score);
    const baseResult = scored.get(base)!;
    const finalists = ranked.slice(0, this.params.finalists ?? 3);
    if (!finalists.includes(baseResult)) finalists.push(baseResult);
    const held = await this.evaluator.evaluateHeldOut(
      finalists.map((f) => f.instruction),
      signal,
    );
    let best = finalists[0]!;
    let bestHeld = -Infinity;
    finalists.forEach((f, i) => {
      const h = held[i]!;
      // Ties go to the base: a change must earn its place.
      if (h.score > bestHeld || (h.score === bestHeld && f === baseResult)) {
        bestHeld = h.score;
        best = { ...f, score: h.score, confidence: h.confidence };
      }
    });
    const baseHeld = held[finalists.indexOf(baseResult)]!;
    return {
      base: { ...baseResult, score: baseHeld.score, confidence: baseHeld.confidence },
      best,
      candidates: ranked,
      metricCalls: this.evaluator.metricCalls,
      rounds,
    };
  }
}
