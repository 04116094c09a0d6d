/**
 * What the optimizer needs from the other parts, in one place: P(success)
 * from the learned scorer, tracked outcomes from the store, a place to
 * record evolutions, and the serving model's version (part of the cache
 * key). Each falls back to a neutral answer when its part is unavailable,
 * so optimization keeps working (with less evidence) rather than failing.
 */
import '../store/service.js';
import type { TermObject } from '../codec/terms.js';
import type { Engine } from '../engine.js';
import type { OutcomeHistory } from './evaluators.js';

export interface EvolutionRecord {
  original_prompt_id: string;
  evolved_prompt_id: string;
  evolution_type: 'optimization';
  performance_improvement: number;
  evolution_timestamp: string;
  evolution_metadata: Record<string, string>;
}

export interface OptimizerDeps {
  predict(instructions: string[], context: Record<string, string>): Promise<{ p: number[]; modelVersion: string }>;
  outcomes(promptIds: string[]): Promise<Map<string, OutcomeHistory>>;
  recordEvolution(entry: EvolutionRecord): Promise<string | undefined>;
  modelVersion(): Promise<string>;
}

/** The learned scorer, when the learning part provides one (service 'scorer'). */
export interface ScorerLike {
  score(items: Array<{ prompt: string; context: Record<string, string> }>): Promise<{ p: number[]; modelVersion: string }>;
  readonly modelVersion: string;
}

async function scorerOf(engine: Engine): Promise<ScorerLike | undefined> {
  const get = (engine as unknown as { service(name: string): Promise<unknown> }).service.bind(engine);
  try {
    return (await get('scorer')) as ScorerLike;
  } catch {
    return undefined;
  }
}

export function optimizerDeps(engine: Engine): OptimizerDeps {
  return {
    async predict(instructions, context) {
      const scorer = await scorerOf(engine);
      if (scorer === undefined) return { p: instructions.map(() => 0.5), modelVersion: 'none' };
      return scorer.score(instructions.map((prompt) => ({ prompt, context })));
    },
    async outcomes(promptIds) {
      try {
        const store = await engine.service('store');
        const aggs = await store.promptAggregates(promptIds);
        return new Map([...aggs].map(([id, a]) => [id, { successes: a.successes, count: a.count }]));
      } catch (err) {
        engine.log.warn({ err: (err as Error).message }, 'no tracked outcomes: the store is unavailable');
        return new Map();
      }
    },
    async recordEvolution(entry) {
      const store = await engine.service('store');
      return store.track('evolution', entry as unknown as TermObject);
    },
    async modelVersion() {
      return (await scorerOf(engine))?.modelVersion ?? 'none';
    },
  };
}
