/**
 * The closed loop's prompt vectors, owned by the decider: the embeddings of
 * the variants and candidates it compares by meaning, by prompt id, held in
 * a bounded LRU (the embedding service keeps its own cache and the store's;
 * this one only spares the decider an await per lookup, so ranking stays a
 * synchronous function of the experiment). When the embedding service
 * fails, the loop goes on by wording, and the service is not asked again
 * for a minute.
 */
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { ShuttingDownError } from '../engine.js';
import type { EmbeddingService } from '../learning/embeddings.js';
import type { VectorOf } from './experiment.js';

/** Vectors held (about 2 KiB each). */
const MAX_VECTORS = 20_000;
const RETRY_AFTER_MS = 60_000;

export class PromptVectors {
  private readonly cache = new LRUCache<string, Float32Array>({ max: MAX_VECTORS });
  private failedAt = -Infinity;
  private closed = false;

  constructor(
    private readonly service: (() => Promise<EmbeddingService>) | undefined,
    private readonly log: Logger,
  ) {}

  /** The vector of a prompt id, when at hand. */
  readonly of: VectorOf = (id) => this.cache.get(id);

  /** Vectors for every item not yet at hand; whether every item has one now. */
  async ensure(items: ReadonlyArray<{ id: string; text: string }>): Promise<boolean> {
    const missing = [...new Map(items.filter((it) => !this.cache.has(it.id)).map((it) => [it.id, it.text]))];
    if (missing.length === 0) return true;
    if (this.service === undefined || Date.now() - this.failedAt < RETRY_AFTER_MS) return false;
    try {
      const svc = await this.service();
      for (let i = 0; i < missing.length; i += 256) {
        const part = missing.slice(i, i + 256);
        const vecs = await svc.embed(part.map(([, text]) => text));
        part.forEach(([id], k) => this.cache.set(id, vecs[k]!));
      }
      return true;
    } catch (err) {
      // Said once per failure (many batches waiting on the service fail together), and not at all once the loop or the engine stops.
      if (err instanceof ShuttingDownError) return false;
      const already = Date.now() - this.failedAt < RETRY_AFTER_MS;
      this.failedAt = Date.now();
      if (!already && !this.closed) this.log.warn({ err: (err as Error).message }, 'no prompt embeddings: the closed loop compares prompts by wording for a minute');
      return false;
    }
  }

  /** The loop stopped: what fails from now on is its services closing under it. */
  close(): void {
    this.closed = true;
  }
}
