/**
 * The cache part: one LRU (lru-cache) for cached prompts and optimization
 * results, with hit/miss counters for `cache_stats` and tags so that an
 * entry can be dropped when what it was built from changes (a template is
 * updated, a new scoring model is promoted).
 */
import { LRUCache } from 'lru-cache';
import type { Term } from '../codec/terms.js';

interface Entry {
  value: Term;
  tags: readonly string[];
}

export interface CacheStats {
  total_entries: number;
  hits: number;
  misses: number;
  hit_rate: number;
  evictions: number;
  invalidations: number;
}

export class PromptCache {
  private readonly lru: LRUCache<string, Entry>;
  /** tag → keys carrying it. Kept in step with the LRU through its dispose hook. */
  private readonly byTag = new Map<string, Set<string>>();
  private hits = 0;
  private misses = 0;
  private evictions = 0;
  private invalidations = 0;

  constructor(maxEntries: number, ttlMs?: number) {
    this.lru = new LRUCache<string, Entry>({
      max: maxEntries,
      ...(ttlMs ? { ttl: ttlMs } : {}),
      dispose: (entry, key, reason) => {
        if (reason === 'evict' || reason === 'expire') this.evictions++;
        this.untag(key, entry.tags);
      },
    });
  }

  get(key: string): { found: true; value: Term } | { found: false } {
    const e = this.lru.get(key);
    if (e === undefined) {
      this.misses++;
      return { found: false };
    }
    this.hits++;
    return { found: true, value: e.value };
  }

  /** `tags`: what the value was built from, e.g. `template:sparc_specification`, `model:v3`. */
  put(key: string, value: Term, tags: readonly string[] = []): void {
    this.lru.set(key, { value, tags });
    for (const t of tags) {
      let s = this.byTag.get(t);
      if (s === undefined) this.byTag.set(t, (s = new Set()));
      s.add(key);
    }
  }

  delete(key: string): boolean {
    return this.lru.delete(key);
  }

  /** Drop every entry built from `tag`. Returns how many were dropped. */
  invalidateTag(tag: string): number {
    const keys = this.byTag.get(tag);
    if (keys === undefined) return 0;
    let n = 0;
    for (const k of [...keys]) if (this.lru.delete(k)) n++;
    this.byTag.delete(tag);
    this.invalidations += n;
    return n;
  }

  clear(): void {
    this.lru.clear();
    this.byTag.clear();
  }

  stats(): CacheStats {
    const lookups = this.hits + this.misses;
    return {
      total_entries: this.lru.size,
      hits: this.hits,
      misses: this.misses,
      hit_rate: lookups === 0 ? 0 : this.hits / lookups,
      evictions: this.evictions,
      invalidations: this.invalidations,
    };
  }

  private untag(key: string, tags: readonly string[]): void {
    for (const t of tags) {
      const s = this.byTag.get(t);
      if (s === undefined) continue;
      s.delete(key);
      if (s.size === 0) this.byTag.delete(t);
    }
  }
}
