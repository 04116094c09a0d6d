/**
 * Prompt embeddings as the store keeps them, so a fleet computes each once:
 * one row per (embedding model, prompt id) with the vector's bytes as the
 * embedding service encodes them (learning/embeddings.ts). The model is part
 * of the key: a new model finds nothing and recomputes. Rows are immutable
 * (a prompt id is a hash of its text), so a second writer's row is ignored.
 */
import type { SqlClient, SqlParam } from './db.js';

export class EmbeddingRecords {
  constructor(
    private readonly db: SqlClient,
    private readonly migrate: () => Promise<void>,
  ) {}

  /** The stored vectors of `promptIds` under `model` (ids without a row are absent). */
  async get(model: string, promptIds: readonly string[]): Promise<Map<string, Uint8Array>> {
    const out = new Map<string, Uint8Array>();
    if (promptIds.length === 0) return out;
    await this.migrate();
    const rows = await this.db.query(`SELECT prompt_id, vector FROM embeddings WHERE model = $1 AND prompt_id = ANY($2::text[])`, [model, [...promptIds]]);
    for (const r of rows) out.set(String(r.prompt_id), new Uint8Array(r.vector as Uint8Array));
    return out;
  }

  /** Store vectors (an existing row is kept). */
  async put(model: string, rows: ReadonlyArray<{ promptId: string; vector: Uint8Array }>): Promise<void> {
    if (rows.length === 0) return;
    await this.migrate();
    const params: SqlParam[] = [model];
    const values = rows.map((r, i) => {
      params.push(r.promptId, r.vector);
      return `($1, $${2 + 2 * i}, $${3 + 2 * i})`;
    });
    await this.db.query(`INSERT INTO embeddings (model, prompt_id, vector) VALUES ${values.join(', ')} ON CONFLICT (model, prompt_id) DO NOTHING`, params);
  }

  /** Rows stored under `model`. */
  async count(model: string): Promise<number> {
    await this.migrate();
    return Number((await this.db.query(`SELECT count(*) AS n FROM embeddings WHERE model = $1`, [model]))[0]?.n ?? 0);
  }
}
