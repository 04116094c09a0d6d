/**
 * The cache part: one LRU (lru-cache) for cached prompts and optimization
 * results, with hit/miss counters for `cache_stats` and tags so that an
 * entry can be dropped when what it was built from changes (a template is
 * updated, a new scoring model is promoted).
 *
 * Bounded two ways, since a client chooses both what and how much it puts
 * (`cache_put`): at most `maxEntries` entries and at most `maxBytes` bytes
 * of estimated memory (lru-cache's `maxSize` with our `sizeCalculation`),
 * least recently used first out; one value may take at most 1/ENTRY_SHARE
 * of `maxBytes` (`put` returns false and stores nothing beyond it). Sizes are
 * estimated from the term's shape (`termBytes`), on the high side.
 */
import { LRUCache } from 'lru-cache';
import { Atom, BitBinary, ErlFloat, ImproperList, isTermObject, Opaque, TermMap, Tuple, type Term } from '../codec/terms.js';

interface Entry {
  value: Term;
  tags: readonly string[];
  bytes: number;
}

/** One value may take at most this share of the cache's bytes. */
export const ENTRY_SHARE = 8;

/** Key prefixes of the engine's own entries (rendered prompts, optimize results): `cache_put` never writes under them. */
export const ENGINE_KEYS = { prompt: 'prompt:', optimize: 'optimize:' } as const;

/**
 * An upper estimate of the memory a term holds in V8 (strings as two bytes a
 * character, object and array headers, a pointer per slot): what the cache
 * counts against its byte limit.
 */
export function termBytes(t: Term): number {
  if (t === null || typeof t === 'boolean') return 8;
  if (typeof t === 'number') return 16;
  if (typeof t === 'string') return 24 + 2 * t.length;
  if (typeof t === 'bigint') return 24 + 8 * Math.ceil(t.toString(16).length / 16);
  if (Buffer.isBuffer(t)) return 96 + t.length;
  if (Array.isArray(t)) {
    let n = 32 + 8 * t.length;
    for (const x of t) n += termBytes(x);
    return n;
  }
  if (t instanceof Atom) return 32 + 2 * t.name.length;
  if (t instanceof ErlFloat) return 32;
  if (t instanceof Tuple) return termBytes(t.items) + 16;
  if (t instanceof ImproperList) return termBytes(t.items) + termBytes(t.tail) + 16;
  if (t instanceof BitBinary || t instanceof Opaque) return 96 + t.bytes.length;
  if (t instanceof TermMap) {
    let n = 48;
    for (const [k, v] of t.entries) n += 48 + termBytes(k) + termBytes(v);
    return n;
  }
  if (isTermObject(t)) {
    let n = 56;
    for (const k of Object.keys(t)) n += 8 + termBytes(k) + termBytes(t[k]!);
    return n;
  }
  return 64;
}

export interface CacheStats {
  total_entries: number;
  /** Estimated bytes held (`termBytes` of keys and values), at most `max_bytes`. */
  total_bytes: number;
  max_entries: number;
  max_bytes: number;
  /** The largest single value `put` stores. */
  max_entry_bytes: number;
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

  readonly maxEntryBytes: number;

  constructor(
    readonly maxEntries: number,
    readonly maxBytes: number,
    ttlMs?: number,
  ) {
    this.maxEntryBytes = Math.max(1, Math.floor(maxBytes / ENTRY_SHARE));
    this.lru = new LRUCache<string, Entry>({
      max: maxEntries,
      maxSize: maxBytes,
      maxEntrySize: this.maxEntryBytes,
      sizeCalculation: (e) => e.bytes,
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

  /**
   * `tags`: what the value was built from, e.g. `template:sparc_specification`, `model:v3`.
   * False (nothing stored, an older value under `key` dropped) when the value is over `maxEntryBytes`.
   */
  put(key: string, value: Term, tags: readonly string[] = []): boolean {
    const bytes = termBytes(key) + termBytes(value);
    if (bytes > this.maxEntryBytes) {
      this.lru.delete(key);
      return false;
    }
    this.lru.set(key, { value, tags, bytes });
    for (const t of tags) {
      let s = this.byTag.get(t);
      if (s === undefined) this.byTag.set(t, (s = new Set()));
      s.add(key);
    }
    return true;
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
      total_bytes: this.lru.calculatedSize,
      max_entries: this.maxEntries,
      max_bytes: this.maxBytes,
      max_entry_bytes: this.maxEntryBytes,
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
