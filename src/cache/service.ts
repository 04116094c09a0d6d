/** Registers the `cache` service (the engine-wide PromptCache). */
import { record, float } from '../codec/terms.js';
import { defineService } from '../engine.js';
import { PromptCache } from './promptCache.js';

declare module '../engine.js' {
  interface Services {
    cache: PromptCache;
  }
}

defineService('cache', {
  create: (engine) => new PromptCache(engine.config.cacheMaxEntries),
  stats: (c) => {
    const s = c.stats();
    return record({ ...s, hit_rate: float(s.hit_rate) });
  },
});
