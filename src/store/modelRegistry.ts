/**
 * The model registry: every trained scorer (version, feature spec hash,
 * samples, held-out metrics, where its bytes are) and which one is
 * promoted (served).
 */
import type { Row, SqlClient } from './db.js';
import { iso } from './rowTerms.js';

export interface ModelRow {
  version: string;
  feature_spec_hash: string;
  created_at: string;
  samples: number;
  metrics: Record<string, number>;
  promoted: boolean;
  path: string;
}

export class ModelRegistry {
  constructor(
    private readonly db: SqlClient,
    private readonly migrate: () => Promise<void>,
  ) {}

  async save(m: Omit<ModelRow, 'created_at' | 'promoted'> & { promoted?: boolean }): Promise<void> {
    await this.migrate();
    await this.db.query(
      `INSERT INTO models (version, feature_spec_hash, samples, metrics, promoted, promoted_at, path) VALUES ($1, $2, $3, $4::jsonb, $5, CASE WHEN $5 THEN now() END, $6)
       ON CONFLICT (version) DO NOTHING`,
      [m.version, m.feature_spec_hash, m.samples, JSON.stringify(m.metrics), m.promoted ?? false, m.path],
    );
  }

  async promote(version: string): Promise<void> {
    await this.db.query(`UPDATE models SET promoted = true, promoted_at = now() WHERE version = $1`, [version]);
  }

  /** The most recently promoted model. */
  async promoted(): Promise<ModelRow | undefined> {
    const rows = await this.db.query(`SELECT * FROM models WHERE promoted ORDER BY promoted_at DESC LIMIT 1`);
    return rows[0] === undefined ? undefined : toModel(rows[0]);
  }

  async list(): Promise<ModelRow[]> {
    return (await this.db.query(`SELECT * FROM models ORDER BY created_at DESC`)).map(toModel);
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
    path: String(r.path),
  };
}
