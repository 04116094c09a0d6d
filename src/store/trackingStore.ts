/**
 * Layer: services. The tracking store: the connection (PostgreSQL with
 * `DATABASE_URL`, else embedded PGlite), migrations under an advisory lock,
 * writes through the GroupCommitWriter (group commit, journal while the
 * database is away), per-prompt aggregates and the rows the trainer learns
 * from. Queries live in queries.ts, the model registry in modelRegistry.ts,
 * row → term conversion in rowTerms.ts. May import: codec, contract, config.
 */
import path from 'node:path';
import type { Logger } from 'pino';
import { float, record, type TermObject } from '../codec/terms.js';
import { openPglite, openPostgres, isConnectionError, type SqlClient } from './db.js';
import { abResultRow, evolutionRow, parseEntry, type AbResultInput, type EntryKind, type EntryRow, type EvolutionInput } from './entries.js';
import { GroupCommitWriter } from './groupCommitWriter.js';
import { Journal } from './journal.js';
import { MIGRATIONS } from './migrations.js';
import { ExperimentRecords } from './experimentRecords.js';
import { ModelRegistry } from './modelRegistry.js';
import { runQuery, toAggregate, type PromptAggregate, type QueryArgs, type QueryKind } from './queries.js';
import { iso } from './rowTerms.js';

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

const MIGRATION_LOCK = 7_403_221; // pg_advisory_lock key for migrations
const TRAINING_LOCK = 7_403_222; // pg_try_advisory_lock key: one trainer at a time

export class TrackingStore {
  private readonly writer: GroupCommitWriter;
  private migrated = false;
  /** The model registry (trained scorers, which one is promoted). */
  readonly models: ModelRegistry;
  /** The closed loop's experiments and variants. */
  readonly experiments: ExperimentRecords;

  private constructor(
    readonly db: SqlClient,
    private readonly journal: Journal,
    private readonly log: Logger,
  ) {
    this.models = new ModelRegistry(db, () => this.migrate());
    this.experiments = new ExperimentRecords(db, () => this.migrate());
    this.writer = new GroupCommitWriter(db, journal, log, { maxBatch: 500, recoverEveryMs: 300, maxInFlight: db.backend === 'postgres' ? 3 : 1, onRecovered: () => this.migrate() });
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

  /**
   * Whether the database answers `SELECT 1` within `timeoutMs` (for `health`):
   * undefined when it does, else why not.
   */
  async ping(timeoutMs: number): Promise<string | undefined> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<string>((resolve) => (timer = setTimeout(() => resolve(`no answer within ${timeoutMs} ms`), timeoutMs)));
    try {
      return await Promise.race([this.db.query('SELECT 1').then(() => undefined), late]);
    } catch (err) {
      return err instanceof Error ? err.message : String(err);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Entries fsync'd to the journal and not yet in the database (the database was away). */
  get journalDepth(): number {
    return this.journal.depth;
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

  /**
   * Run `fn` as the only trainer among the instances sharing this database
   * (a PostgreSQL advisory lock held on its own connection: it dies with the
   * instance). `{ locked: false }` at once when another instance trains.
   */
  withTrainingLock<T>(fn: () => Promise<T>): Promise<{ locked: true; value: T } | { locked: false }> {
    return this.db.withAdvisoryLock(TRAINING_LOCK, fn);
  }

  /** Record an evolution the engine made (typed: no term readers). Resolves with its id once durable. */
  async recordEvolution(e: EvolutionInput): Promise<string> {
    const row = evolutionRow(e);
    await this.writer.write(row);
    return row.id;
  }

  /** Record an A/B result the engine decided (typed). Resolves with its id once durable. */
  async recordAbResult(e: AbResultInput): Promise<string> {
    const row = abResultRow(e);
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

  // ------------------------------------------------------------------ queries

  /** One of the seven query kinds, rows as the contract returns them. */
  query(kind: QueryKind, a: QueryArgs): Promise<TermObject[]> {
    return runQuery(this.db, kind, a);
  }
}


/** Split a migration into statements (no semicolons inside our DDL strings). */
function splitStatements(sql: string): string[] {
  return sql
    .split(/;\s*\n/)
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}
