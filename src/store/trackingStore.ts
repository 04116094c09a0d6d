/**
 * The store part: tracking entries and the model registry, on PostgreSQL
 * (`DATABASE_URL`) or embedded PGlite, behind one class. Writes go through
 * the GroupCommitWriter (group commit, journal while the database is away);
 * reads are the seven query kinds, per-prompt aggregates, and the rows the
 * trainer learns from.
 */
import path from 'node:path';
import type { Logger } from 'pino';
import { float, newMap, record, type Term, type TermObject } from '../codec/terms.js';
import { openPglite, openPostgres, isConnectionError, type Row, type SqlClient, type SqlParam } from './db.js';
import { parseEntry, TABLES, type EntryKind, type EntryRow } from './entries.js';
import { GroupCommitWriter } from './groupCommitWriter.js';
import { Journal } from './journal.js';
import { MIGRATIONS } from './migrations.js';

export interface PromptAggregate {
  count: number;
  successes: number;
  success_rate: number;
  mean_confidence: number;
  p50_ms: number;
  p95_ms: number;
}

export interface ExecutionRow {
  id: string;
  prompt_id: string;
  success: boolean;
  confidence_score: number | null;
  execution_time_ms: number;
  context_signature: string | null;
  timestamp: string;
  metadata: Record<string, string>;
}

export interface FeedbackRow {
  prompt_id: string;
  feedback_type: string;
  rating: number;
  timestamp: string;
  context: Record<string, string>;
}

export interface ModelRow {
  version: string;
  feature_spec_hash: string;
  created_at: string;
  samples: number;
  metrics: Record<string, number>;
  promoted: boolean;
  path: string;
}

export const QUERY_KINDS = ['by_id', 'similar', 'by_tech_stack', 'prompt_executions', 'recent_feedback', 'evolution_history', 'high_performance'] as const;
export type QueryKind = (typeof QUERY_KINDS)[number];

const MIGRATION_LOCK = 7_403_221; // pg_advisory_lock key for migrations

export class TrackingStore {
  private readonly writer: GroupCommitWriter;
  private migrated = false;

  private constructor(
    readonly db: SqlClient,
    private readonly journal: Journal,
    private readonly log: Logger,
  ) {
    this.writer = new GroupCommitWriter(db, journal, log, { maxBatch: 500, recoverEveryMs: 300, onRecovered: () => this.migrate() });
  }

  /** Open the backend, migrate, and replay what an earlier process left in the journal. */
  static async open(opts: { databaseUrl?: string; dataDir: string; log: Logger }): Promise<TrackingStore> {
    const db = opts.databaseUrl ? await openPostgres(opts.databaseUrl) : await openPglite(path.join(opts.dataDir, 'pglite'));
    const journal = new Journal(path.join(opts.dataDir, 'journal'));
    await journal.open();
    const store = new TrackingStore(db, journal, opts.log);
    try {
      await store.migrate();
    } catch (err) {
      if (!isConnectionError(err)) throw err;
      opts.log.warn({ err: (err as Error).message }, 'database unreachable at start: tracking writes go to the journal until it answers');
    }
    if (!store.migrated || journal.depth > 0) store.writer.startRecovery();
    return store;
  }

  get backend(): 'postgres' | 'pglite' {
    return this.db.backend;
  }

  /** Apply pending migrations under an advisory lock (safe from two sidecars at once). */
  async migrate(): Promise<void> {
    if (this.migrated) return;
    await this.db.transaction(async (q) => {
      await q('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
      await q('CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())');
      const done = new Set((await q('SELECT version FROM schema_migrations')).map((r) => Number(r.version)));
      for (const m of MIGRATIONS) {
        if (done.has(m.version)) continue;
        for (const stmt of splitStatements(m.sql)) await q(stmt);
        await q('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
      }
    });
    this.migrated = true;
  }

  /** Validate and write one entry; resolves with its id once it is committed (or journaled). */
  async track(kind: EntryKind, entry: TermObject): Promise<string> {
    const row = parseEntry(kind, entry);
    await this.writer.write(row);
    return row.id;
  }

  /** Write an entry already validated by `parseEntry`. */
  write(row: EntryRow): Promise<void> {
    return this.writer.write(row);
  }

  get figures(): TermObject {
    const f = this.writer.figures;
    return record({
      backend: this.db.backend,
      db_up: f.db_up,
      journal_depth: this.journal.depth,
      batches: f.batches,
      rows: f.rows,
      mean_batch: float(f.batches === 0 ? 0 : f.rows / f.batches),
      journaled: f.journaled,
      replayed: f.replayed,
    });
  }

  async close(): Promise<void> {
    await this.writer.close();
    await this.journal.close();
    await this.db.close();
  }

  // ------------------------------------------------------------------ reads

  async promptAggregates(promptIds: string[]): Promise<Map<string, PromptAggregate>> {
    if (promptIds.length === 0) return new Map();
    const rows = await this.db.query(
      `SELECT prompt_id, count(*)::int AS count, sum(CASE WHEN success THEN 1 ELSE 0 END)::int AS successes,
              coalesce(avg(confidence_score), 0)::float8 AS mean_confidence,
              coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY execution_time_ms), 0)::float8 AS p50_ms,
              coalesce(percentile_cont(0.95) WITHIN GROUP (ORDER BY execution_time_ms), 0)::float8 AS p95_ms
         FROM prompt_executions WHERE prompt_id = ANY($1::text[]) GROUP BY prompt_id`,
      [promptIds],
    );
    return new Map(rows.map((r) => [String(r.prompt_id), toAggregate(r)]));
  }

  /** Executions for the trainer (oldest first), at most `limit`. */
  async trainingExecutions(opts: { limit?: number } = {}): Promise<ExecutionRow[]> {
    const rows = await this.db.query(
      `SELECT id, prompt_id, success, confidence_score, execution_time_ms, context_signature, "timestamp", metadata FROM prompt_executions ORDER BY seq LIMIT $1`,
      [opts.limit ?? 5_000_000],
    );
    return rows.map((r) => ({
      id: String(r.id),
      prompt_id: String(r.prompt_id),
      success: Boolean(r.success),
      confidence_score: r.confidence_score === null ? null : Number(r.confidence_score),
      execution_time_ms: Number(r.execution_time_ms),
      context_signature: r.context_signature === null ? null : String(r.context_signature),
      timestamp: iso(r.timestamp),
      metadata: (r.metadata ?? {}) as Record<string, string>,
    }));
  }

  async trainingFeedback(opts: { limit?: number } = {}): Promise<FeedbackRow[]> {
    const rows = await this.db.query(`SELECT prompt_id, feedback_type, rating, "timestamp", context FROM prompt_feedback ORDER BY seq LIMIT $1`, [opts.limit ?? 1_000_000]);
    return rows.map((r) => ({ prompt_id: String(r.prompt_id), feedback_type: String(r.feedback_type), rating: Number(r.rating), timestamp: iso(r.timestamp), context: (r.context ?? {}) as Record<string, string> }));
  }

  // ------------------------------------------------------------- model registry

  async saveModel(m: Omit<ModelRow, 'created_at' | 'promoted'> & { promoted?: boolean }): Promise<void> {
    await this.migrate();
    await this.db.query(
      `INSERT INTO models (version, feature_spec_hash, samples, metrics, promoted, promoted_at, path) VALUES ($1, $2, $3, $4::jsonb, $5, CASE WHEN $5 THEN now() END, $6)
       ON CONFLICT (version) DO NOTHING`,
      [m.version, m.feature_spec_hash, m.samples, JSON.stringify(m.metrics), m.promoted ?? false, m.path],
    );
  }

  async promoteModel(version: string): Promise<void> {
    await this.db.query(`UPDATE models SET promoted = true, promoted_at = now() WHERE version = $1`, [version]);
  }

  /** The most recently promoted model. */
  async promotedModel(): Promise<ModelRow | undefined> {
    const rows = await this.db.query(`SELECT * FROM models WHERE promoted ORDER BY promoted_at DESC LIMIT 1`);
    return rows[0] === undefined ? undefined : toModel(rows[0]);
  }

  async listModels(): Promise<ModelRow[]> {
    return (await this.db.query(`SELECT * FROM models ORDER BY created_at DESC`)).map(toModel);
  }

  // ------------------------------------------------------------------ queries

  async query(kind: QueryKind, a: QueryArgs): Promise<TermObject[]> {
    switch (kind) {
      case 'by_id': {
        const out: TermObject[] = [];
        for (const [k, spec] of Object.entries(TABLES) as Array<[EntryKind, (typeof TABLES)[EntryKind]]>) {
          const rows = await this.db.query(`SELECT * FROM ${spec.table} WHERE id = $1::uuid`, [a.id!]);
          for (const r of rows) out.push(toRecord({ ...r, kind: k }));
        }
        return out;
      }
      case 'similar': {
        const stack = (a.techStack ?? []).map((s) => s.toLowerCase());
        const rows = await this.db.query(
          `SELECT *, (SELECT count(*) FROM unnest(project_tech_stack) s WHERE s = ANY($1::text[]))::int AS overlap
             FROM context_signatures
            WHERE project_tech_stack && $1::text[] OR project_type = $2
            ORDER BY (project_type = $2) DESC, overlap DESC, created_at DESC LIMIT $3`,
          [stack, a.projectType ?? '', a.limit],
        );
        return rows.map(toRecord);
      }
      case 'by_tech_stack': {
        const rows = await this.db.query(`SELECT * FROM context_signatures WHERE project_tech_stack @> $1::text[] ORDER BY created_at DESC LIMIT $2`, [
          (a.techStack ?? []).map((s) => s.toLowerCase()),
          a.limit,
        ]);
        return rows.map(toRecord);
      }
      case 'prompt_executions': {
        const rows = await this.db.query(`SELECT * FROM prompt_executions WHERE prompt_id = $1 ORDER BY "timestamp" DESC, seq DESC LIMIT $2`, [a.promptId!, a.limit]);
        return rows.map(toRecord);
      }
      case 'recent_feedback': {
        const params: SqlParam[] = [new Date(Date.now() - (a.sinceMs ?? 86_400_000)).toISOString(), a.limit];
        let where = `"timestamp" >= $1::timestamptz`;
        if (a.promptId !== undefined) {
          params.push(a.promptId);
          where += ` AND prompt_id = $3`;
        }
        const rows = await this.db.query(`SELECT * FROM prompt_feedback WHERE ${where} ORDER BY "timestamp" DESC, seq DESC LIMIT $2`, params);
        return rows.map(toRecord);
      }
      case 'evolution_history': {
        const rows = await this.db.query(
          `SELECT * FROM prompt_evolutions WHERE original_prompt_id = $1 OR evolved_prompt_id = $1 ORDER BY evolution_timestamp, seq LIMIT $2`,
          [a.promptId!, a.limit],
        );
        return rows.map(toRecord);
      }
      case 'high_performance': {
        const rows = await this.db.query(
          `SELECT prompt_id, count(*)::int AS count, sum(CASE WHEN success THEN 1 ELSE 0 END)::int AS successes,
                  coalesce(avg(confidence_score), 0)::float8 AS mean_confidence,
                  coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY execution_time_ms), 0)::float8 AS p50_ms,
                  coalesce(percentile_cont(0.95) WITHIN GROUP (ORDER BY execution_time_ms), 0)::float8 AS p95_ms
             FROM prompt_executions GROUP BY prompt_id
           HAVING count(*) >= $2 AND sum(CASE WHEN success THEN 1 ELSE 0 END)::float8 / count(*) >= $1
            ORDER BY sum(CASE WHEN success THEN 1 ELSE 0 END)::float8 / count(*) DESC, count(*) DESC, prompt_id LIMIT $3`,
          [a.minSuccessRate ?? 0.8, a.minCount ?? 1, a.limit],
        );
        return rows.map((r) => aggregateRecord(String(r.prompt_id), toAggregate(r)));
      }
    }
  }
}

export interface QueryArgs {
  id?: string;
  promptId?: string;
  techStack?: string[];
  projectType?: string;
  sinceMs?: number;
  minSuccessRate?: number;
  minCount?: number;
  limit: number;
}

export function aggregateRecord(promptId: string, a: PromptAggregate): TermObject {
  return record({
    prompt_id: promptId,
    count: a.count,
    successes: a.successes,
    success_rate: float(a.success_rate),
    mean_confidence: float(a.mean_confidence),
    p50_ms: float(a.p50_ms),
    p95_ms: float(a.p95_ms),
  });
}

function toAggregate(r: Row): PromptAggregate {
  const count = Number(r.count);
  const successes = Number(r.successes);
  return { count, successes, success_rate: count === 0 ? 0 : successes / count, mean_confidence: Number(r.mean_confidence), p50_ms: Number(r.p50_ms), p95_ms: Number(r.p95_ms) };
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

const FLOAT_COLUMNS = new Set(['confidence_score', 'rating', 'performance_improvement', 'confidence_level']);
const JSON_COLUMNS = new Set(['metadata', 'context', 'evolution_metadata', 'metrics']);

/** A row as the contract returns it: field names as atoms, user maps with binary keys, floats as floats, timestamps ISO-8601. */
function toRecord(r: Row): TermObject {
  const out: Record<string, Term | undefined> = {};
  for (const [k, v] of Object.entries(r)) {
    if (k === 'seq') continue;
    if (v === null || v === undefined) out[k] = null;
    else if (v instanceof Date) out[k] = v.toISOString();
    else if (FLOAT_COLUMNS.has(k)) out[k] = float(Number(v));
    else if (JSON_COLUMNS.has(k)) out[k] = userMap(v as Record<string, unknown>, k === 'metrics');
    else if (Array.isArray(v)) out[k] = v.map(String);
    else if (typeof v === 'bigint') out[k] = Number(v);
    else out[k] = v as Term;
  }
  return record(out);
}

function userMap(v: Record<string, unknown>, floats: boolean): TermObject {
  const m = newMap();
  for (const [k, x] of Object.entries(v)) m[k] = floats ? float(Number(x)) : String(x);
  return m;
}

function iso(v: unknown): string {
  return v instanceof Date ? v.toISOString() : new Date(String(v)).toISOString();
}

/** Split a migration into statements (no semicolons inside our DDL strings). */
function splitStatements(sql: string): string[] {
  return sql
    .split(/;\s*\n/)
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}
