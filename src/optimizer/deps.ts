/**
 * What the optimizer needs from the other services, typed: P(success) from
 * the learned scorer, tracked outcomes and a place to record evolutions
 * from the store, and the serving model's version (part of the cache key).
 * Each falls back to a neutral answer when its service is unavailable, so
 * optimization keeps working (with less evidence) rather than failing.
 */
import type { Logger } from 'pino';
import type { Scorer } from '../learning/scorer.js';
import type { EvolutionInput } from '../store/entries.js';
import type { TrackingStore } from '../store/trackingStore.js';
import type { Outcomes } from './bandit.js';

export interface OptimizerServices {
  scorer(): Promise<Scorer>;
  store(): Promise<TrackingStore>;
}

export class OptimizerDeps {
  constructor(
    private readonly services: OptimizerServices,
    private readonly log: Logger,
  ) {}

  private async scorer(): Promise<Scorer | undefined> {
    try {
      return await this.services.scorer();
    } catch {
      return undefined;
    }
  }

  /** P(success) of each instruction, read against `base` (the prompt they are variants of) when given. */
  async predict(instructions: string[], context: Record<string, string>, base?: string): Promise<{ p: number[]; modelVersion: string }> {
    const scorer = await this.scorer();
    if (scorer === undefined) return { p: instructions.map(() => 0.5), modelVersion: 'none' };
    return scorer.score(instructions.map((prompt) => ({ prompt, context, ...(base === undefined ? {} : { base }) })));
  }

  async outcomes(promptIds: string[]): Promise<Map<string, Outcomes>> {
    try {
      const aggs = await (await this.services.store()).promptAggregates(promptIds);
      return new Map([...aggs].map(([id, a]) => [id, { successes: a.successes, count: a.count }]));
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'no tracked outcomes: the store is unavailable');
      return new Map();
    }
  }

  async recordEvolution(entry: EvolutionInput): Promise<string> {
    return (await this.services.store()).recordEvolution(entry);
  }

  async modelVersion(): Promise<string> {
    return (await this.scorer())?.modelVersion ?? 'none';
  }
}
