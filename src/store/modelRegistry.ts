/**
 * The model registry: every trained scorer (version, feature spec hash,
 * samples, held-out metrics, its ONNX bytes and metadata) and which one is
 * promoted (served). The bytes live in the table, not in a local file, so
 * any instance sharing the database can load any model; a promotion is
 * announced on the `prompt_engine_model` channel (NOTIFY) for the others.
 */
import type { Lease, Query, Row, SqlClient } from './db.js';
import { iso } from './rowTerms.js';

export interface ModelRow {
  version: string;
  feature_spec_hash: string;
  created_at: string;
  samples: number;
  metrics: Record<string, number>;
  promoted: boolean;
  /** Where an older row's bytes were written (rows from before the bytes moved into the table). */
  path: string | null;
}

export interface StoredModel {
  onnx: Uint8Array;
  /** The model's metadata as written (the learner checks its feature spec before serving it). */
  meta: Record<string, unknown>;
}

export const MODEL_CHANNEL = 'prompt_engine_model';

export class ModelRegistry {
  constructor(
    private readonly db: SqlClient,
    private readonly migrate: () => Promise<void>,
  ) {}

  async save(m: Omit<ModelRow, 'created_at' | 'promoted' | 'path'> & StoredModel & { promoted?: boolean }): Promise<void> {
    await this.migrate();
    await this.db.query(
      `INSERT INTO models (version, feature_spec_hash, samples, metrics, promoted, promoted_at, onnx, meta) VALUES ($1, $2, $3, $4::jsonb, $5, CASE WHEN $5 THEN now() END, $6, $7::jsonb)
       ON CONFLICT (version) DO NOTHING`,
      [m.version, m.feature_spec_hash, m.samples, JSON.stringify(m.metrics), m.promoted ?? false, m.onnx, JSON.stringify(m.meta)],
    );
  }

  /**
   * Mark a model promoted and tell every instance listening on the database,
   * in one transaction: the NOTIFY goes out at its commit, so a promotion
   * that committed is announced even when its caller was told it failed (cut
   * at its COMMIT). With `lease` (the trainer's), the update is fenced: it
   * fails, promoting nothing, once the lease is lost (another instance may be
   * training).
   */
  async promote(version: string, lease?: Lease): Promise<void> {
    const promoteAndAnnounce = async (q: Query): Promise<void> => {
      await q(`UPDATE models SET promoted = true, promoted_at = now() WHERE version = $1`, [version]);
      await q('SELECT pg_notify($1, $2)', [MODEL_CHANNEL, version]);
    };
    if (lease !== undefined) await lease.transaction(promoteAndAnnounce);
    else await this.db.transaction(promoteAndAnnounce);
  }

  /** A model's bytes and metadata (from the table; from its file for rows written before the bytes moved in). */
  async load(version: string): Promise<StoredModel | undefined> {
    const r = (await this.db.query(`SELECT onnx, meta, path FROM models WHERE version = $1`, [version]))[0];
    if (r === undefined) return undefined;
    if (r.onnx !== null && r.onnx !== undefined && r.meta !== null && r.meta !== undefined)
      return { onnx: new Uint8Array(r.onnx as Uint8Array), meta: r.meta as Record<string, unknown> };
    return undefined;
  }

  /**
   * Promotions announced by any instance (PostgreSQL only); returns a stop function. Each time
   * announcements may have been missed (before listening began, while the listening connection was
   * away) `f` gets undefined and reads the registry itself; it skips the version it serves.
   */
  onPromoted(f: (version: string | undefined) => void, onFirstError?: (err: unknown) => void): Promise<() => Promise<void>> {
    // Undefined: notices may have been missed; the caller looks at the registry for what it can serve.
    const catchUp = (): void => f(undefined);
    // Listening from now on (the database away at start: once the store can listen, which it keeps trying), and what
    // was promoted before it listened (since the caller read the serving model, or while nobody listened).
    let unreachable = false;
    return this.db
      .listen(MODEL_CHANNEL, f, catchUp, (err) => {
        unreachable = true;
        onFirstError?.(err);
      })
      .then((stop) => {
        if (!unreachable) catchUp();
        return stop;
      });
  }

  /** The most recently promoted model. */
  async promoted(): Promise<ModelRow | undefined> {
    const rows = await this.db.query(`SELECT version, feature_spec_hash, created_at, samples, metrics, promoted, path FROM models WHERE promoted ORDER BY promoted_at DESC LIMIT 1`);
    return rows[0] === undefined ? undefined : toModel(rows[0]);
  }

  /** Every promoted model's version, the most recent promotion first. */
  async promotedVersions(): Promise<string[]> {
    return (await this.db.query(`SELECT version FROM models WHERE promoted ORDER BY promoted_at DESC`)).map((r) => String(r.version));
  }

  async list(): Promise<ModelRow[]> {
    return (await this.db.query(`SELECT version, feature_spec_hash, created_at, samples, metrics, promoted, path FROM models ORDER BY created_at DESC`)).map(toModel);
  }
}

function toModel(r: Row): ModelRow {
  return {
    version: String(r.version),
    feature_spec_hash: String(r.feature_spec_hash),
    created_at: iso(r.created_at),
    samples: Number(r.samples),
    metrics: (r.metrics ?? {}) as Record<string, number>,
    promoted: Boolean(r.promoted),
    path: r.path === null || r.path === undefined ? null : String(r.path),
  };
}
