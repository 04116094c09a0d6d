/**
 * Layer: services. The tracking store: the connection (PostgreSQL with
 * `DATABASE_URL`, else embedded PGlite), migrations under an advisory lock,
 * writes through the GroupCommitWriter (group commit, journal while the
 * database is away), per-prompt aggregates and the rows the trainer learns
 * from. Queries live in queries.ts, the model registry in modelRegistry.ts,
 * row → term conversion in rowTerms.ts. May import: codec, contract, config.
 */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import type { Logger } from 'pino';
import { float, record, type TermObject } from '../codec/terms.js';
import { openPglite, openPostgres, isConnectionError, MIGRATION_WORK, TRAINING_READ, type Lease, type Query, type SqlClient } from './db.js';
import { abResultRow, evolutionRow, parseEntry, type AbResultInput, type EntryKind, type EntryRow, type EvolutionInput } from './entries.js';
import { GroupCommitWriter, insertRowsIn, type StoreWrite, type WriteReceipt } from './groupCommitWriter.js';
import { Journal } from './journal.js';
import { MIGRATIONS, OWN_TABLES } from './migrations.js';
import { ExperimentRecords, type GenerationWrite, type HistoryAdd } from './experimentRecords.js';
import { ModelRegistry } from './modelRegistry.js';
import { EmbeddingRecords } from './embeddingRecords.js';
import { runQuery, toAggregate, type PromptAggregate, type QueryArgs, type QueryKind } from './queries.js';
import { iso } from './rowTerms.js';
import { OpError } from '../contract/errors.js';

/** What the only trainer holds: aborted once the training lease is lost; the lease fences the promotion. */
export interface TrainingHold {
  readonly signal: AbortSignal;
  readonly lease: Lease;
}

/** At most this many executions with a text are read for one training (the newest). */
export const TRAINING_EXECUTIONS = 1_000_000;

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

const MIGRATION_LOCK = 7_403_221; // pg_advisory_lock key for migrations (any schema: they are short)

/** The store's schema when none is configured: its own, beside an app's `public`. */
export const DEFAULT_SCHEMA = 'prompt_engine';
/**
 * While a batch commits on PostgreSQL, the next waits for this many writes (or for a batch to
 * return): fewer, larger batches cost less per outcome. Chosen with bench/loopPort.ts (none,
 * 64, 128, and "as many as are committing", beside the checkout before it), BENCHMARKS.md.
 */
const MIN_CONCURRENT_BATCH = 128;

/** The closed loop's NOTIFY channel in `schema` (a short name: channels are identifiers). */
export const loopChannel = (schema: string): string => `pe_loop_${lockKey(schema, 'loop').toString(36)}`;

/**
 * An advisory-lock key for `purpose` in `schema` (FNV-1a, 31 bits): two
 * installations in different schemas of one database never share a trainer
 * or a closed-loop decider.
 */
export function lockKey(schema: string, purpose: string): number {
  let h = 0x811c9dc5;
  for (const ch of `${schema}\u0000${purpose}`) {
    h ^= ch.codePointAt(0)!;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h & 0x7fffffff;
}

export class TrackingStore {
  private readonly writer: GroupCommitWriter;
  private migrated = false;
  /** The model registry (trained scorers, which one is promoted). */
  readonly models: ModelRegistry;
  /** The closed loop's experiments and variants. */
  readonly experiments: ExperimentRecords;
  /** Prompt embeddings by (embedding model, prompt id). */
  readonly embeddings: EmbeddingRecords;

  private constructor(
    readonly db: SqlClient,
    private readonly journal: Journal,
    private readonly log: Logger,
    /** This instance's name among the sidecars sharing the database (the closed loop's notices say who sent them). */
    readonly instanceId: string,
  ) {
    this.models = new ModelRegistry(db, () => this.migrate());
    this.embeddings = new EmbeddingRecords(db, () => this.migrate());
    const notice = { channel: loopChannel(db.schema), sender: instanceId };
    this.experiments = new ExperimentRecords(db, () => this.migrate(), notice);
    this.writer = new GroupCommitWriter(db, journal, log, { maxBatch: 500, recoverEveryMs: 300, maxInFlight: db.backend === 'postgres' ? 3 : 1, minConcurrentBatch: MIN_CONCURRENT_BATCH, onRecovered: () => this.migrate(), notice });
  }

  /** Open the backend, migrate, and replay what an earlier process left in the journal. */
  static async open(opts: { databaseUrl?: string; dataDir: string; schema?: string; instanceId?: string; log: Logger; poolAnswerMs?: number }): Promise<TrackingStore> {
    const schema = opts.schema ?? DEFAULT_SCHEMA;
    const instanceId = opts.instanceId ?? `${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
    // Read by the counting trigger: where to announce counted outcomes, and as whom.
    const settings = { 'prompt_engine.loop_channel': loopChannel(schema), 'prompt_engine.instance': instanceId };
    const db = opts.databaseUrl ? await openPostgres(opts.databaseUrl, { schema, settings, ...(opts.poolAnswerMs === undefined ? {} : { poolAnswerMs: opts.poolAnswerMs }) }) : await openPglite(path.join(opts.dataDir, 'pglite'), { schema, settings });
    const journal = new Journal(path.join(opts.dataDir, 'journal'));
    await journal.open();
    const store = new TrackingStore(db, journal, opts.log, instanceId);
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
      // Its connection is cut at the same limit: a frozen one is not held until the pool's (POOL_ANSWER_MS).
      return await Promise.race([this.db.query('SELECT 1', [], { timeoutMs }).then(() => undefined), late]);
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

  /**
   * Create the store's schema, move an installation made before it had one
   * out of `public`, and apply pending migrations, under an advisory lock
   * (safe from two sidecars at once). Nothing of an app's own in `public`
   * (Ecto's `schema_migrations`, a `models` table) is read or changed.
   */
  async migrate(): Promise<void> {
    if (this.migrated) return;
    // Every start but a new version's first finds nothing to do: known by a read under the pool's time limit, not
    // by the migrations' transaction and its hour (a connection frozen then would hold the writer's recovery as long).
    if (await this.upToDate()) {
      this.migrated = true;
      return;
    }
    const schema = this.db.schema;
    await this.db.transaction(async (q) => {
      await q('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
      await q(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
      const moved = await moveOutOfPublic(q, schema);
      if (moved.length > 0) this.log.info({ schema, tables: moved }, 'moved the store\'s tables out of public into its own schema');
      await q(`CREATE TABLE IF NOT EXISTS ${schema}.schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
      const done = new Set((await q(`SELECT version FROM ${schema}.schema_migrations`)).map((r) => Number(r.version)));
      for (const m of MIGRATIONS) {
        if (done.has(m.version)) continue;
        for (const stmt of splitStatements(m.sql)) await q(stmt);
        await q(`INSERT INTO ${schema}.schema_migrations (version, name) VALUES ($1, $2)`, [m.version, m.name]);
      }
    }, MIGRATION_WORK);
    this.migrated = true;
  }

  /** Whether every migration of this version is applied (false when the store's bookkeeping is not there yet). */
  private async upToDate(): Promise<boolean> {
    const bookkeeping = `${this.db.schema}.schema_migrations`;
    // Looked for first: a statement on a table that is not there would leave an ERROR in the server's log at every first start.
    const [present] = await this.db.query('SELECT to_regclass($1) IS NOT NULL AS present', [bookkeeping]);
    if (present?.present !== true) return false;
    const [applied] = await this.db.query(`SELECT count(*)::int AS n FROM ${bookkeeping} WHERE version = ANY($1::int[])`, [MIGRATIONS.map((m) => m.version)]);
    return Number(applied?.n) === MIGRATIONS.length;
  }

  /** Validate and write one entry; resolves with its id once it is committed (or journaled). */
  async track(kind: EntryKind, entry: TermObject): Promise<string> {
    const row = parseEntry(kind, entry);
    await this.writer.write(row);
    return row.id;
  }

  /** A new closed-loop generation through group commit (journaled while the database is away). */
  async writeGeneration(g: GenerationWrite): Promise<WriteReceipt> {
    return this.writer.write({ kind: 'generation', id: randomUUID(), generation: g });
  }

  /** A snapshot of an experiment's counts for its history, through group commit (journaled while the database is away). */
  async writeHistorySnapshot(history: HistoryAdd): Promise<void> {
    await this.writer.write({ kind: 'history', id: randomUUID(), history });
  }

  /** Write tracking entries inside a transaction of the caller's (a closed-loop change and the entries that record it). */
  writeEntriesIn(q: Query, rows: EntryRow[]): Promise<void> {
    return insertRowsIn(q, rows);
  }

  /** Hold the lease named `purpose` (one holder among the instances sharing the database), or undefined when another holds it. */
  lease(purpose: string): Promise<Lease | undefined> {
    return this.db.lease(lockKey(this.db.schema, purpose));
  }

  /** `f` runs whenever the database is back and the journal replayed into it. */
  onRecovered(f: () => void): void {
    this.writer.onRecovered(f);
  }

  /** Whether writes reach the database now (false while they go to the journal). */
  get databaseUp(): boolean {
    return this.writer.databaseUp;
  }

  /**
   * Run `fn` as the only trainer among the instances sharing this database:
   * it holds the training lease (a PostgreSQL advisory lock on a connection
   * of its own, kept alive every second; it dies with the instance).
   * `{ locked: false }` at once when another instance trains. Should the
   * lease be lost mid-training (its connection dropped: another instance
   * may now train), `hold.signal` aborts, and `hold.lease` fences the
   * promotion, which then fails rather than racing the new trainer.
   */
  async withTrainingLock<T>(fn: (hold: TrainingHold) => Promise<T>): Promise<{ locked: true; value: T } | { locked: false }> {
    const lease = await this.lease('training');
    if (lease === undefined) return { locked: false };
    const lost = new AbortController();
    lease.onLost(() => lost.abort(new OpError('unavailable', 'the training lease was lost (its connection to the database dropped): another instance may train now')));
    try {
      return { locked: true, value: await fn({ signal: lost.signal, lease }) };
    } finally {
      await lease.release();
    }
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

  /** Write an entry already validated by `parseEntry` (or a generation); resolves with its receipt once durable. */
  write(row: StoreWrite): Promise<WriteReceipt> {
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
      refused: f.refused,
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

  /**
   * The executions the trainer learns a text from: those whose metadata carries the prompt's text, the
   * newest `limit` (default TRAINING_EXECUTIONS), oldest first. An outcome of the closed loop carries
   * none: the trainer reads it as its variant's counts (ExperimentRecords.outcomesByVariant). So an
   * outcome the loop counted (the counting trigger found its generation: EXECUTIONS_BY_VARIANT) for a
   * variant it knows is left out here even when it carries a text: it is learnt once, in its variant's row.
   * Read through an index of the rows with a text: the loop's outcomes, which carry none, cost nothing here.
   */
  async trainingExecutions(opts: { limit?: number } = {}): Promise<ExecutionRow[]> {
    const rows = await this.db.query(
      `SELECT id, prompt_id, success, confidence_score, execution_time_ms, context_signature, "timestamp", metadata FROM prompt_executions x
        WHERE metadata ? 'prompt' AND metadata->>'prompt' <> ''
          AND NOT (metadata ? 'experiment'
                   AND (coalesce(metadata->>'generation', '') ~ '^[0-9]{1,9}$'
                        OR EXISTS (SELECT 1 FROM experiments e WHERE e.name = x.metadata->>'experiment' AND e.model = coalesce(x.metadata->>'model', 'default')))
                   AND EXISTS (SELECT 1 FROM experiment_variants v WHERE v.prompt_id = x.prompt_id AND v.state <> 'reserve'))
        ORDER BY seq DESC LIMIT $1`,
      [opts.limit ?? TRAINING_EXECUTIONS],
      TRAINING_READ,
    );
    rows.reverse();
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
    const rows = await this.db.query(`SELECT prompt_id, feedback_type, rating, "timestamp", context FROM prompt_feedback ORDER BY seq LIMIT $1`, [opts.limit ?? 1_000_000], TRAINING_READ);
    return rows.map((r) => ({ prompt_id: String(r.prompt_id), feedback_type: String(r.feedback_type), rating: Number(r.rating), timestamp: iso(r.timestamp), context: (r.context ?? {}) as Record<string, string> }));
  }

  // ------------------------------------------------------------------ queries

  /** One of the seven query kinds, rows as the contract returns them. */
  query(kind: QueryKind, a: QueryArgs): Promise<TermObject[]> {
    return runQuery(this.db, kind, a);
  }
}


/**
 * Before the store had a schema of its own its tables lived in `public`.
 * When `public.schema_migrations` is ours (it has a `name` column, which
 * Ecto's has not) and the store's schema has none yet, every table of ours
 * found in `public` (recognised by a column only ours has) moves over with
 * its rows, indexes and sequences. Returns the tables moved.
 */
async function moveOutOfPublic(q: Query, schema: string): Promise<string[]> {
  if (schema === 'public') return [];
  const columns = await q(
    `SELECT table_schema, table_name, column_name FROM information_schema.columns
      WHERE table_schema IN ('public', $1) AND table_name = ANY($2::text[])`,
    [schema, OWN_TABLES.map((t) => t.table)],
  );
  const has = (where: string, table: string, column?: string): boolean => columns.some((c) => c.table_schema === where && c.table_name === table && (column === undefined || c.column_name === column));
  if (has(schema, 'schema_migrations') || !has('public', 'schema_migrations', 'name')) return [];
  const moved: string[] = [];
  for (const { table, marker } of OWN_TABLES) {
    if (!has('public', table, marker) || has(schema, table)) continue;
    await q(`ALTER TABLE public.${table} SET SCHEMA ${schema}`);
    moved.push(table);
  }
  return moved;
}

/** Split a migration into statements: at a semicolon ending a line, outside `$$` function bodies. */
export function splitStatements(sql: string): string[] {
  const out: string[] = [];
  let quoted = false;
  let current = '';
  for (const part of sql.split(/(\$\$|;\s*\n)/)) {
    if (part === '$$') quoted = !quoted;
    if (!quoted && /^;\s*\n$/.test(part)) {
      out.push(current);
      current = '';
    } else current += part;
  }
  out.push(current);
  return out.map((s) => s.trim()).filter((s) => s.length > 0);
}
