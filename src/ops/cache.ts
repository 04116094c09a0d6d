/** `cache_get` / `cache_put` / `cache_clear` / `cache_stats` on the engine's PromptCache. */
import { atom, float, record, type Term } from '../codec/terms.js';
import { str } from '../contract/args.js';
import { defineOp, type OpSpec } from './types.js';
import { badRequest } from '../contract/errors.js';

const cacheGet = defineOp<{ key: string }>({
  name: 'cache_get',
  validate: (a) => ({ key: str(a, 'key', { max: 4096 }) }),
  async handle({ key }, { engine }) {
    const r = (await engine.service('cache')).get(key);
    return r.found ? record({ found: true, value: r.value }) : record({ found: false, value: null });
  },
});

const cachePut = defineOp<{ key: string; value: Term }>({
  name: 'cache_put',
  validate: (a) => {
    if (!Object.prototype.hasOwnProperty.call(a, 'value')) throw badRequest('value', 'is required (any term)');
    return { key: str(a, 'key', { max: 4096 }), value: a.value as Term };
  },
  async handle({ key, value }, { engine }) {
    (await engine.service('cache')).put(key, value);
    return atom('ok');
  },
});

const cacheClear = defineOp<Record<string, never>>({
  name: 'cache_clear',
  validate: () => ({}),
  async handle(_a, { engine }) {
    (await engine.service('cache')).clear();
    return atom('ok');
  },
});

const cacheStats = defineOp<Record<string, never>>({
  name: 'cache_stats',
  validate: () => ({}),
  async handle(_a, { engine }) {
    const s = (await engine.service('cache')).stats();
    return record({ ...s, hit_rate: float(s.hit_rate) });
  },
});

export const cacheOps: OpSpec<unknown>[] = [cacheGet, cachePut, cacheClear, cacheStats] as OpSpec<unknown>[];
