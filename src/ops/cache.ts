/**
 * `cache_get` / `cache_put` / `cache_clear` / `cache_stats` on the engine's
 * PromptCache (bounded in entries and bytes: cache/promptCache.ts).
 */
import { atom, float, record, type Term } from '../codec/terms.js';
import { anyTerm, string } from '../contract/schema.js';
import { ENGINE_KEYS, ENTRY_SHARE, termBytes } from '../cache/promptCache.js';
import { typedOp, type OpSpec } from './types.js';
import { badRequest } from '../contract/errors.js';

/** The cache key, as both ops take it. */
const KEY = string({ max: 4096, required: true, doc: 'the cache key' });

const cacheGet = typedOp({
  name: 'cache_get',
  summary: 'a value from the sidecar\'s LRU cache',
  args: { key: KEY },
  reply: '%{found: true, value: term} | %{found: false, value: nil}',
  examples: [{ key: 'greeting' }],
  async handle({ key }, { engine }) {
    const r = (await engine.service('cache')).get(key);
    return r.found ? record({ found: true, value: r.value }) : record({ found: false, value: null });
  },
});

const cachePut = typedOp({
  name: 'cache_put',
  summary: 'store any term in the LRU cache under a key',
  args: {
    key: KEY,
    value: anyTerm({ required: true, doc: 'stored as it is and returned by cache_get' }),
  },
  reply: ':ok',
  errors: { bad_request: `the value (with its key) is over the largest entry the cache takes: 1/${ENTRY_SHARE} of PROMPT_ENGINE_CACHE_BYTES (cache_stats: max_entry_bytes); or the key starts with ${Object.values(ENGINE_KEYS).join(' or ')} (the engine's own entries)` },
  examples: [{ key: 'greeting', value: { text: 'hello' } }],
  async handle({ key, value }, { engine }) {
    // The engine's own entries are its to write: a put under their prefix would be served as a render's or an optimize's result.
    const reserved = Object.values(ENGINE_KEYS).find((p) => key.startsWith(p));
    if (reserved !== undefined) throw badRequest('key', `keys starting with ${JSON.stringify(reserved)} are the engine's own (${Object.values(ENGINE_KEYS).join(', ')}); choose another`);
    const cache = await engine.service('cache');
    if (!cache.put(key, value))
      throw badRequest('value', `about ${termBytes(key) + termBytes(value)} bytes in memory, over the cache's limit of ${cache.maxEntryBytes} bytes per entry (1/${ENTRY_SHARE} of PROMPT_ENGINE_CACHE_BYTES)`);
    return atom('ok');
  },
});

const cacheClear = typedOp({
  name: 'cache_clear',
  summary: 'drop every cached entry (prompts, optimization results, cache_put values)',
  args: {},
  reply: ':ok',
  examples: [{}],
  async handle(_a, { engine }) {
    (await engine.service('cache')).clear();
    return atom('ok');
  },
});

const cacheStats = typedOp({
  name: 'cache_stats',
  summary: 'the cache\'s size and hit figures',
  args: {},
  reply: '%{total_entries, total_bytes, max_entries, max_bytes, max_entry_bytes, hits, misses, hit_rate: float, evictions, invalidations}',
  examples: [{}],
  async handle(_a, { engine }) {
    const s = (await engine.service('cache')).stats();
    return record({ ...s, hit_rate: float(s.hit_rate) });
  },
});

export const cacheOps: OpSpec<unknown>[] = [cacheGet, cachePut, cacheClear, cacheStats];
