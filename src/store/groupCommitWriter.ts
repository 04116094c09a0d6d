/**
 * Group commit: concurrent writes (tracking entries, closed-loop
 * generations) are coalesced into one statement per batch. Writes that
 * arrive while batches commit form the next batch; on PostgreSQL up to
 * `maxInFlight` batches commit at once on the pool's connections, what
 * waits shared evenly among the free ones (a caller that awaits each write
 * still sees its writes committed in its order; the order across callers is
 * not promised), on PGlite one. A write is answered only after its row is
 * committed — or, while the database is unreachable, after it is fsync'd to
 * the journal, which a recovery loop replays in order when the database
 * returns; while the journal holds entries, one batch at a time.
 *
 * A closed-loop outcome (an execution carrying a `loop` key) moves its
 * variant's count in the statement that stores the row, only when the row
 * is new: a repeated id counts once, whichever sidecar stores it, and its
 * receipt carries the variant's totals after the count. A row the database
 * refuses fails only its own caller: the batch is split in halves until the
 * row is alone, the others are written.
 */
import type { Logger } from 'pino';
import type { CopyInTransaction, Query, SqlClient, SqlParam } from './db.js';
import { isConnectionError } from './db.js';
import { TABLES, type EntryKind, type EntryRow } from './entries.js';
import { loopNotice, writeGeneration, type GenerationWrite } from './experimentRecords.js';
import type { Journal } from './journal.js';

/** A new closed-loop generation, written through group commit so it is journaled like any entry while the database is away. */
export interface GenerationEntry {
  kind: 'generation';
  id: string;
  generation: GenerationWrite;
}

export type StoreWrite = EntryRow | GenerationEntry;

/** What a write came to: stored, already stored under its id (`duplicate`), or journaled; a counted outcome's variant totals after it. */
export interface WriteReceipt {
  status: 'stored' | 'duplicate' | 'journaled';
  totals?: { generation: number; successes: number; count: number };
}

const STORED: WriteReceipt = { status: 'stored' };
const JOURNALED: WriteReceipt = { status: 'journaled' };

interface Pending {
  row: StoreWrite;
  resolve(r: WriteReceipt): void;
  reject(err: unknown): void;
}

export interface WriterFigures {
  batches: number;
  rows: number;
  journaled: number;
  replayed: number;
  /** Rows the database refused (each failed only its own caller; from the journal: logged and dropped). */
  refused: number;
  db_up: boolean;
}

/** Where the closed loop announces what a batch changed (NOTIFY), and as whom. */
export interface LoopNoticeTarget {
  channel: string;
  sender: string;
}

export class GroupCommitWriter {
  private queue: Pending[] = [];
  private flushing: Promise<void> | undefined;
  private inFlightBatches = 0;
  private idle: Array<() => void> = [];
  private dbUp = true;
  private recovering: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly recoveredHandlers: Array<() => void> = [];
  readonly figures: WriterFigures = { batches: 0, rows: 0, journaled: 0, replayed: 0, refused: 0, db_up: true };

  constructor(
    private readonly db: SqlClient,
    private readonly journal: Journal,
    private readonly log: Logger,
    private readonly opts: { maxBatch: number; recoverEveryMs: number; maxInFlight?: number; onRecovered?: () => Promise<void>; notice?: LoopNoticeTarget } = { maxBatch: 500, recoverEveryMs: 500 },
  ) {}

  /** Resolves when the row is committed (or durably journaled). */
  write(row: StoreWrite): Promise<WriteReceipt> {
    if (this.closed) return Promise.reject(new Error('the store is closed'));
    return new Promise<WriteReceipt>((resolve, reject) => {
      this.queue.push({ row, resolve, reject });
      // Let the writes of this tick join the first batch.
      if (this.flushing === undefined) this.flushing = new Promise<void>((r) => setImmediate(r)).then(() => this.pump());
    });
  }

  /** `f` runs each time the journal has been replayed into a database that is back. */
  onRecovered(f: () => void): void {
    this.recoveredHandlers.push(f);
  }

  get databaseUp(): boolean {
    return this.dbUp;
  }

  /** Start in the journaling state (the database was unreachable at start, or the journal holds entries). */
  startRecovery(): void {
    this.dbUp = false;
    this.figures.db_up = false;
    this.scheduleRecovery(0);
  }

  /** Start batches while there is work and room; resolves when nothing is queued or committing. */
  private pump(): Promise<void> {
    const max = this.dbUp && this.journal.depth === 0 ? (this.opts.maxInFlight ?? 1) : 1;
    while (this.queue.length > 0 && this.inFlightBatches < max) {
      // What waits is shared evenly among the free connections (a full batch and a sliver left
      // one connection idle while the other did all the work).
      const size = Math.min(this.opts.maxBatch, Math.ceil(this.queue.length / (max - this.inFlightBatches)));
      const batch = this.queue.splice(0, size);
      this.inFlightBatches++;
      void this.commit(batch).finally(() => {
        this.inFlightBatches--;
        void this.pump();
      });
    }
    if (this.queue.length === 0 && this.inFlightBatches === 0) {
      this.flushing = undefined;
      for (const f of this.idle.splice(0)) f();
      return Promise.resolve();
    }
    return new Promise<void>((r) => this.idle.push(r));
  }

  private async commit(batch: Pending[]): Promise<void> {
    let rest = batch;
    if (this.dbUp && this.journal.depth === 0) {
      rest = await this.writeIsolated(batch);
      if (rest.length === 0) return;
      this.log.warn('database unreachable: journaling tracking writes');
      this.dbUp = false;
      this.figures.db_up = false;
      this.scheduleRecovery(this.opts.recoverEveryMs);
    }
    try {
      await this.journal.append(rest.map((p) => p.row));
      this.figures.journaled += rest.length;
      for (const p of rest) p.resolve(JOURNALED);
      // Whatever sits in the journal gets replayed, also if recovery finished while we appended.
      this.scheduleRecovery(this.dbUp ? 0 : this.opts.recoverEveryMs);
    } catch (err) {
      for (const p of rest) p.reject(err);
    }
  }

  /**
   * Write a batch; a row the database refuses fails only its own caller
   * (halves are written apart until it is alone). Returns what could not be
   * written because the database went away (to be journaled).
   */
  private async writeIsolated(batch: Pending[]): Promise<Pending[]> {
    try {
      const receipts = await writeBatch(this.db, batch.map((p) => p.row), this.opts.notice);
      this.figures.batches++;
      this.figures.rows += batch.length;
      for (const p of batch) p.resolve(receipts.get(p.row.id) ?? STORED);
      return [];
    } catch (err) {
      if (isConnectionError(err)) return batch;
      if (batch.length === 1) {
        this.figures.refused++;
        batch[0]!.reject(err);
        return [];
      }
      const mid = batch.length >> 1;
      const left = await this.writeIsolated(batch.slice(0, mid));
      if (left.length > 0) return [...left, ...batch.slice(mid)];
      return this.writeIsolated(batch.slice(mid));
    }
  }

  private scheduleRecovery(ms: number): void {
    // One recovery at a time: two replays of one journal would interleave.
    if (this.recovering !== undefined || this.recoveryRunning || this.closed) return;
    this.recovering = setTimeout(() => {
      this.recovering = undefined;
      this.recoveryRunning = true;
      void this.recover().finally(() => {
        this.recoveryRunning = false;
        if (this.journal.depth > 0 || !this.dbUp) this.scheduleRecovery(this.opts.recoverEveryMs);
      });
    }, ms);
    this.recovering.unref();
  }
  private recoveryRunning = false;

  /** Probe the database; when it answers, replay the journal, then write directly again. */
  private async recover(): Promise<void> {
    try {
      await this.db.query('SELECT 1');
      await this.opts.onRecovered?.();
      const n = await this.journal.replay((rows) => this.replayBatch(rows), this.opts.maxBatch);
      this.figures.replayed += n;
      if (this.journal.depth === 0) {
        const wasDown = !this.dbUp;
        this.dbUp = true;
        this.figures.db_up = true;
        if (n > 0) this.log.info({ replayed: n }, 'database back: journal replayed');
        if (wasDown || n > 0) for (const f of this.recoveredHandlers) f();
        return;
      }
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'database still unreachable');
    }
  }

  /** A journal batch: a row the database refuses is logged and dropped (it can never be written); a connection error stops the replay. */
  private async replayBatch(rows: StoreWrite[]): Promise<void> {
    try {
      await writeBatch(this.db, rows, this.opts.notice);
    } catch (err) {
      if (isConnectionError(err)) throw err;
      if (rows.length === 1) {
        this.figures.refused++;
        this.log.error({ err: (err as Error).message, kind: rows[0]!.kind, id: rows[0]!.id }, 'a journaled write was refused by the database and dropped');
        return;
      }
      const mid = rows.length >> 1;
      await this.replayBatch(rows.slice(0, mid));
      await this.replayBatch(rows.slice(mid));
    }
  }

  /** Wait for queued writes; stop recovering. Journaled entries stay for the next start. */
  async close(): Promise<void> {
    while (this.flushing !== undefined) await this.flushing;
    while (this.inFlightBatches > 0) await new Promise<void>((r) => this.idle.push(r));
    this.closed = true;
    if (this.recovering !== undefined) clearTimeout(this.recovering);
  }
}

const isGeneration = (r: StoreWrite): r is GenerationEntry => r.kind === 'generation';

/**
 * One batch in one transaction (one statement when it can be): closed-loop
 * generations first, then entries by kind; executions that report
 * closed-loop outcomes through COPY and one counting statement (when the
 * batch is big enough for COPY on this backend) or one statement that
 * stores and counts, other entries through COPY or one unnest INSERT per
 * kind. Duplicates of an id are ignored. Returns each row's receipt where
 * it says more than `stored`.
 */
export async function writeBatch(db: SqlClient, rows: readonly StoreWrite[], notice?: LoopNoticeTarget): Promise<Map<string, WriteReceipt>> {
  const entries = rows.filter((r): r is EntryRow => !isGeneration(r));
  const generations = rows.filter(isGeneration);
  const executions = entries.filter((r) => r.kind === 'execution');
  const outcomes = executions.some((r) => r.loop !== undefined);
  if (!outcomes && generations.length === 0) {
    await insertRows(db, entries);
    return new Map();
  }
  const plan = (viaCopy: boolean): { receipts: Map<string, WriteReceipt>; steps: Step[]; viaCopy: boolean } => {
    const receipts = new Map<string, WriteReceipt>();
    const steps: Step[] = generations.map((r) => async (q) => {
      if ((await writeGeneration(q, r.generation)) && notice !== undefined) await q('SELECT pg_notify($1, $2)', [notice.channel, loopNotice(notice.sender, [r.generation])]);
    });
    const others = outcomes ? entries.filter((r) => r.kind !== 'execution') : entries;
    if (outcomes) steps.push(viaCopy ? (q, copy) => countedCopy(q, copy, executions, receipts, notice) : (q) => countedInsert(q, executions, receipts, notice));
    if (others.length > 0) steps.push(...statementsOf(others));
    return { receipts, steps, viaCopy };
  };
  const run = async ({ receipts, steps, viaCopy }: ReturnType<typeof plan>): Promise<Map<string, WriteReceipt>> => {
    // One statement is atomic on its own: one round trip instead of BEGIN, the statement, COMMIT.
    if (steps.length === 1 && !viaCopy) await steps[0]!((sql, params) => db.query(sql, params), noCopy);
    else await db.transaction(async (q, copy) => {
      for (const step of steps) await step(q, copy);
    });
    return receipts;
  };
  if (outcomes && executions.length >= db.copy.minRows) {
    try {
      return await run(plan(true));
    } catch (err) {
      // A repeated id fails the COPY (no ON CONFLICT): the statement stores the new rows and counts only them.
      if ((err as { code?: string }).code !== '23505') throw err;
    }
  }
  return run(plan(false));
}

type Step = (q: Query, copy: CopyInTransaction) => Promise<void>;

const noCopy: CopyInTransaction = () => Promise.reject(new Error('COPY outside a transaction'));

/**
 * The tail of both counting statements: `counted` (name, model,
 * generation, prompt_id, k successes, n outcomes) moves `experiment_counts`
 * for variants that exist (a prompt id or experiment the loop does not know
 * counts nowhere), upserted in key order, so two batches moving the same
 * variants lock them in the same order and never deadlock; the totals come
 * back, and the loop is told which experiments moved (NOTIFY, delivered at
 * commit). `$c` and `$p` are the notice's channel and payload.
 */
const countTail = (c: number, p: number): string => `
     upd AS (
       INSERT INTO experiment_counts AS c (name, model, generation, prompt_id, successes, count)
       SELECT x.name, x.model, x.generation, x.prompt_id, x.k, x.n FROM counted x
        WHERE x.generation IS NOT NULL
          AND EXISTS (SELECT 1 FROM experiment_variants v WHERE v.name = x.name AND v.model = x.model AND v.generation = x.generation AND v.prompt_id = x.prompt_id AND v.state <> 'reserve')
        ORDER BY 1, 2, 3, 4
       ON CONFLICT (name, model, generation, prompt_id) DO UPDATE SET successes = c.successes + excluded.successes, count = c.count + excluded.count
       RETURNING c.name, c.model, c.generation, c.prompt_id, c.successes, c.count)
     SELECT (SELECT coalesce(json_agg(json_build_object('name', name, 'model', model, 'generation', generation, 'prompt_id', prompt_id, 'successes', successes, 'count', count)), '[]'::json) FROM upd) AS totals,
            (SELECT pg_notify($${c}, $${p}) WHERE $${c} <> '' AND EXISTS (SELECT 1 FROM upd)) AS noticed`;

/** The notice's channel and payload parameters for the rows' experiments. */
function noticeParams(rows: EntryRow[], notice: LoopNoticeTarget | undefined): [string, string] {
  if (notice === undefined) return ['', ''];
  return [notice.channel, loopNotice(notice.sender, rows.flatMap((r) => (r.loop === undefined ? [] : [{ name: r.loop.experiment, model: r.loop.model }])))];
}

/**
 * Executions stored and closed-loop outcomes counted in one statement: the
 * rows go in with ON CONFLICT DO NOTHING, and only the rows that went in
 * (RETURNING) are counted. An outcome without a generation counts for the
 * experiment's current one.
 */
async function countedInsert(q: Query, rows: EntryRow[], receipts: Map<string, WriteReceipt>, notice: LoopNoticeTarget | undefined): Promise<void> {
  const spec = TABLES.execution;
  const cols = spec.columns.map((c) => `"${c}"`).join(',');
  const n = spec.columns.length;
  const params: SqlParam[] = spec.columns.map((_, i) => rows.map((r) => r.values[i] as string | number | boolean | null));
  params.push(rows.map((r) => r.loop?.experiment ?? null), rows.map((r) => r.loop?.model ?? null), rows.map((r) => r.loop?.generation ?? null), ...noticeParams(rows, notice));
  const unnest = spec.arrayTypes!.map((t, i) => `$${i + 1}::${t}[]`).join(',');
  const [result] = await q(
    `WITH src AS (
       SELECT * FROM unnest(${unnest}, $${n + 1}::text[], $${n + 2}::text[], $${n + 3}::int4[]) AS t(${cols}, o_name, o_model, o_generation)),
     ins AS (
       INSERT INTO ${spec.table} (${cols}) SELECT ${cols} FROM src ON CONFLICT (id) DO NOTHING RETURNING id),
     counted AS (
       SELECT s.o_name AS name, s.o_model AS model, coalesce(s.o_generation, e.generation) AS generation, s.prompt_id,
              count(*) FILTER (WHERE s.success) AS k, count(*) AS n
         FROM (SELECT DISTINCT ON (id) * FROM src WHERE o_name IS NOT NULL) s
         JOIN ins ON ins.id = s.id
         LEFT JOIN experiments e ON e.name = s.o_name AND e.model = s.o_model
        GROUP BY 1, 2, 3, 4),${countTail(n + 4, n + 5)},
            (SELECT coalesce(array_agg(id::text), '{}') FROM ins) AS inserted`,
    params,
  );
  receiptsOf(rows, new Set((result?.inserted as string[] | undefined) ?? []), result, receipts);
}

/**
 * Executions stored by COPY (every row new: a repeated id fails it whole)
 * and their outcomes counted in one statement after it, in one transaction.
 */
async function countedCopy(q: Query, copy: CopyInTransaction, rows: EntryRow[], receipts: Map<string, WriteReceipt>, notice: LoopNoticeTarget | undefined): Promise<void> {
  const spec = TABLES.execution;
  await copy(spec.table, spec.columns, copyText(rows));
  const byVariant = new Map<string, { name: string; model: string; generation: number | null; promptId: string; k: number; n: number }>();
  for (const r of rows) {
    if (r.loop === undefined) continue;
    const key = `${r.loop.experiment}\u0000${r.loop.model}\u0000${r.loop.generation ?? ''}\u0000${String(r.values[1])}`;
    let o = byVariant.get(key);
    if (o === undefined) byVariant.set(key, (o = { name: r.loop.experiment, model: r.loop.model, generation: r.loop.generation, promptId: String(r.values[1]), k: 0, n: 0 }));
    o.n++;
    if (r.values[3] === true) o.k++;
  }
  const o = [...byVariant.values()];
  const [result] = await q(
    `WITH o AS (SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::int8[], $6::int8[]) AS t(name, model, generation, prompt_id, k, n)),
     counted AS (
       SELECT o.name, o.model, coalesce(o.generation, e.generation) AS generation, o.prompt_id, sum(o.k) AS k, sum(o.n) AS n
         FROM o LEFT JOIN experiments e ON e.name = o.name AND e.model = o.model
        GROUP BY 1, 2, 3, 4),${countTail(7, 8)}`,
    [o.map((x) => x.name), o.map((x) => x.model), o.map((x) => x.generation), o.map((x) => x.promptId), o.map((x) => x.k), o.map((x) => x.n), ...noticeParams(rows, notice)],
  );
  receiptsOf(rows, undefined, result, receipts);
}

/** Each row's receipt: `duplicate` when it was not inserted (`inserted` undefined: every row was), else the totals of its variant. */
function receiptsOf(rows: EntryRow[], inserted: ReadonlySet<string> | undefined, result: Record<string, unknown> | undefined, receipts: Map<string, WriteReceipt>): void {
  // By variant; a batch holding outcomes of two generations of one variant keeps the newer generation's totals.
  const totals = new Map<string, { generation: number; successes: number; count: number }>();
  for (const t of (result?.totals as Array<Record<string, unknown>> | undefined) ?? []) {
    const key = `${String(t.name)}\u0000${String(t.model)}\u0000${String(t.prompt_id)}`;
    const generation = Number(t.generation);
    if ((totals.get(key)?.generation ?? -1) < generation) totals.set(key, { generation, successes: Number(t.successes), count: Number(t.count) });
  }
  for (const r of rows) {
    if (inserted !== undefined && !inserted.has(r.id)) {
      receipts.set(r.id, { status: 'duplicate' });
      continue;
    }
    const t = r.loop === undefined ? undefined : totals.get(`${r.loop.experiment}\u0000${r.loop.model}\u0000${String(r.values[1])}`);
    if (t !== undefined) receipts.set(r.id, { status: 'stored', totals: t });
  }
}

/**
 * Entries without closed-loop outcomes: one INSERT per table, all in one
 * transaction; duplicates of an id are ignored. Rows travel as one array
 * parameter per column (`INSERT ... SELECT * FROM unnest($1::uuid[], ...)`):
 * a constant-size statement that PostgreSQL parses once per batch, instead
 * of a VALUES list with a parameter per cell. A batch of one kind and at
 * least the backend's `copy.minRows` rows goes through COPY instead (faster
 * per row on both backends: BENCHMARKS.md, store); COPY has no ON CONFLICT,
 * so a batch that repeats an id already stored (a redelivered NATS message,
 * a replayed journal) fails whole with unique_violation and is written
 * again by the INSERT, which skips the duplicate.
 */
export async function insertRows(db: SqlClient, rows: EntryRow[]): Promise<void> {
  const kind = rows[0]?.kind;
  if (kind !== undefined && rows.length >= db.copy.minRows && TABLES[kind].arrayTypes !== undefined && rows.every((r) => r.kind === kind)) {
    try {
      await db.copy.write(TABLES[kind].table, TABLES[kind].columns, copyText(rows));
      return;
    } catch (err) {
      if ((err as { code?: string }).code !== '23505') throw err;
    }
  }
  const statements = statementsOf(rows);
  if (statements.length === 1) {
    await statements[0]!((sql, params) => db.query(sql, params));
    return;
  }
  await db.transaction(async (q) => {
    for (const st of statements) await st(q);
  });
}

/** Entries written inside a caller's transaction (the closed loop's A/B results and evolutions, with the change they record). */
export async function insertRowsIn(q: Query, rows: EntryRow[]): Promise<void> {
  for (const st of statementsOf(rows)) await st(q);
}

/** Rows in COPY's text format: tab-separated, `\N` for NULL, backslash escapes. */
export function copyText(rows: EntryRow[]): string {
  let out = '';
  for (const r of rows) {
    const v = r.values;
    for (let i = 0; i < v.length; i++) {
      if (i > 0) out += '\t';
      const x = v[i];
      if (x === null || x === undefined) out += '\\N';
      else if (typeof x === 'string') out += /[\\\t\n\r]/.test(x) ? x.replace(/[\\\t\n\r]/g, escapeCopyChar) : x;
      else if (typeof x === 'number' || typeof x === 'boolean') out += String(x);
      else throw new Error('an array column cannot go through COPY');
    }
    out += '\n';
  }
  return out;
}

function escapeCopyChar(c: string): string {
  return c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r';
}

/** One INSERT statement per entry kind present. */
function statementsOf(rows: EntryRow[]): Array<(q: Query) => Promise<void>> {
  const byKind = new Map<EntryKind, EntryRow[]>();
  for (const r of rows) {
    let list = byKind.get(r.kind);
    if (list === undefined) byKind.set(r.kind, (list = []));
    list.push(r);
  }
  return [...byKind].map(([kind, list]) => {
    const st = insertStatement(kind, list);
    return async (q: Query) => void (await q(st.sql, st.params));
  });
}

function insertStatement(kind: EntryKind, list: EntryRow[]): { sql: string; params: SqlParam[] } {
  const spec = TABLES[kind];
  const cols = spec.columns.map((c) => `"${c}"`).join(',');
  if (spec.arrayTypes !== undefined) {
    const params: SqlParam[] = spec.columns.map((_, i) => list.map((r) => r.values[i] as string | number | boolean | null));
    const unnest = spec.arrayTypes.map((t, i) => `$${i + 1}::${t}[]`).join(',');
    return { sql: `INSERT INTO ${spec.table} (${cols}) SELECT * FROM unnest(${unnest}) ON CONFLICT (id) DO NOTHING`, params };
  }
  const params: SqlParam[] = [];
  const tuples = list.map((r) => {
    const ph = spec.columns.map((c, i) => {
      params.push(r.values[i] as SqlParam);
      const cast = spec.casts[c];
      return cast ? `$${params.length}::${cast}` : `$${params.length}`;
    });
    return `(${ph.join(',')})`;
  });
  return { sql: `INSERT INTO ${spec.table} (${cols}) VALUES ${tuples.join(',')} ON CONFLICT (id) DO NOTHING`, params };
}
