/**
 * Group commit: concurrent writes (tracking entries, closed-loop
 * generations) are coalesced into one statement per batch. Writes that
 * arrive while batches commit form the next batch; on PostgreSQL up to
 * `maxInFlight` batches commit at once on the pool's connections, what
 * waits shared evenly among the free ones (a caller that awaits each write
 * still sees its writes committed in its order; the order across callers is
 * not promised), on PGlite one. While a batch commits, another starts only
 * once `minConcurrentBatch` writes wait (else they wait for a batch to
 * return, one commit at most): a batch's fixed cost (its round trip, its
 * statement, the counting trigger's setup, its NOTIFY) is paid by fewer,
 * larger batches under load, and a lone write still goes at once
 * (BENCHMARKS.md, the closed loop's hot path). A write is answered only after its row is
 * committed — or, while the database is unreachable, after it is fsync'd to
 * the journal, which a recovery loop replays in order when the database
 * returns; while the journal holds entries, one batch at a time.
 *
 * A closed-loop outcome (an execution whose metadata names an experiment)
 * moves its variant's count in the statement that stores the row, only when
 * the row is new (the store's trigger, migrations.ts): a repeated id counts
 * once, whichever sidecar stores it, and its receipt carries the variant's
 * totals after the count. A row the database refuses fails only its own
 * caller: the batch is split in halves until the row is alone, the others
 * are written.
 */
import type { Logger } from 'pino';
import type { Query, SessionOptions, SqlClient, SqlParam } from './db.js';
import { isConnectionError, unnestInsert } from './db.js';
import { TABLES, type EntryKind, type EntryRow } from './entries.js';
import { historyInsert, loopNotice, writeGeneration, writeHistory, type GenerationWrite, type HistoryAdd, type VariantTotals } from './experimentRecords.js';
import type { Journal } from './journal.js';
import { COUNTED_COLUMNS } from './migrations.js';

/** A new closed-loop generation, written through group commit so it is journaled like any entry while the database is away. */
export interface GenerationEntry {
  kind: 'generation';
  id: string;
  generation: GenerationWrite;
}

/** A snapshot of an experiment's counts for its history, written with the next batch (no lock: it records, it decides nothing). */
export interface HistorySnapshotEntry {
  kind: 'history';
  id: string;
  history: HistoryAdd;
}

export type StoreWrite = EntryRow | GenerationEntry | HistorySnapshotEntry;

/** What a write came to: stored, already stored under its id (`duplicate`), or journaled; a counted outcome's variant totals after it. */
export interface WriteReceipt {
  readonly status: 'stored' | 'duplicate' | 'journaled';
  /** Shared by every row of the batch that moved this variant: read, never changed. */
  readonly totals?: Readonly<VariantTotals & { generation: number }>;
}

const STORED: WriteReceipt = { status: 'stored' };
const JOURNALED: WriteReceipt = { status: 'journaled' };
const DUPLICATE: WriteReceipt = { status: 'duplicate' };

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

/**
 * How long a batch may go unanswered by PostgreSQL before it is taken for away: a silent network
 * (no reset) would otherwise hold every write on its connection until TCP gives up, hours later.
 * A batch carrying more than a MiB gets a second more for each (`answerWithin`): large and slow
 * is not gone.
 */
export const WRITE_ANSWER_MS = 4_000;

/** A batch's time limit: `baseMs`, and 1 s more for each MiB of text it carries. */
function answerWithin(rows: readonly StoreWrite[], baseMs: number): SessionOptions {
  let chars = 0;
  for (const r of rows) if (!isGeneration(r) && !isHistory(r)) for (const v of r.values) if (typeof v === 'string') chars += v.length;
  return { timeoutMs: baseMs + Math.floor(chars / 2 ** 20) * 1_000 };
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
  private startPending = false;
  private dbUp = true;
  private recovering: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly recoveredHandlers: Array<() => void> = [];
  readonly figures: WriterFigures = { batches: 0, rows: 0, journaled: 0, replayed: 0, refused: 0, db_up: true };

  constructor(
    private readonly db: SqlClient,
    private readonly journal: Journal,
    private readonly log: Logger,
    private readonly opts: {
      maxBatch: number;
      recoverEveryMs: number;
      maxInFlight?: number;
      minConcurrentBatch?: number;
      onRecovered?: () => Promise<void>;
      notice?: LoopNoticeTarget;
      /** How long a batch, a replayed one or the recovery's probe may go unanswered (default WRITE_ANSWER_MS). */
      answerWithinMs?: number;
    } = { maxBatch: 500, recoverEveryMs: 500 },
  ) {
    this.answerWithinMs = opts.answerWithinMs ?? WRITE_ANSWER_MS;
  }
  /** Past it (and its batch's allowance for size) a write's connection is cut and the batch journaled (idempotent by entry id, so a batch that did commit is skipped at replay). */
  private readonly answerWithinMs: number;

  /** Resolves when the row is committed (or durably journaled). */
  write(row: StoreWrite): Promise<WriteReceipt> {
    if (this.closed) return Promise.reject(new Error('the store is closed'));
    return new Promise<WriteReceipt>((resolve, reject) => {
      this.queue.push({ row, resolve, reject });
      // Let the writes of this tick join the first batch.
      if (this.flushing === undefined) this.flushing = new Promise<void>((r) => setImmediate(r)).then(() => this.pump());
      // Enough wait beside a committing batch: start the next on a free connection (after this tick's writes join it).
      else if (!this.startPending && this.inFlightBatches > 0 && this.mayStart()) {
        this.startPending = true;
        setImmediate(() => {
          this.startPending = false;
          this.startBatches();
        });
      }
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

  /** Connections a batch may commit on now: one while the journal holds entries or the database is away. */
  private maxInFlightNow(): number {
    return this.dbUp && this.journal.depth === 0 ? (this.opts.maxInFlight ?? 1) : 1;
  }

  private leastConcurrent(): number {
    return Math.min(this.opts.minConcurrentBatch ?? 1, this.opts.maxBatch);
  }

  /** Whether a batch may start now: something waits, a connection is free, and nothing commits or `minConcurrentBatch` wait. */
  private mayStart(): boolean {
    return this.queue.length > 0 && this.inFlightBatches < this.maxInFlightNow() && (this.inFlightBatches === 0 || this.queue.length >= this.leastConcurrent());
  }

  /** The flush that `write` starts: batches while there is work and room; resolves when nothing is queued or committing. */
  private pump(): Promise<void> {
    this.kick();
    return this.flushing === undefined ? Promise.resolve() : new Promise<void>((r) => this.idle.push(r));
  }

  /**
   * Start what may start; once nothing is queued or committing, the flush is
   * over and whoever waits for it is answered. A committed batch calls this,
   * never `pump`: under sustained load the writer is never idle, and a waiter
   * per batch would pile up until it was.
   */
  private kick(): void {
    this.startBatches();
    if (this.queue.length === 0 && this.inFlightBatches === 0) {
      this.flushing = undefined;
      for (const f of this.idle.splice(0)) f();
    }
  }

  /** Batches out of what waits, while a connection is free (beside a committing batch only once `minConcurrentBatch` wait). */
  private startBatches(): void {
    const max = this.maxInFlightNow();
    const least = this.leastConcurrent();
    while (this.mayStart()) {
      // What waits is shared evenly among the free connections (a full batch and a sliver left
      // one connection idle while the other did all the work), in batches of at least `least`.
      const size = Math.min(this.opts.maxBatch, Math.max(least, Math.ceil(this.queue.length / (max - this.inFlightBatches))));
      const batch = this.queue.splice(0, size);
      this.inFlightBatches++;
      void this.commit(batch).finally(() => {
        this.inFlightBatches--;
        this.kick();
      });
    }
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
      const rows = batch.map((p) => p.row);
      const receipts = await writeBatch(this.db, rows, this.opts.notice, answerWithin(rows, this.answerWithinMs));
      this.figures.batches++;
      this.figures.rows += batch.length;
      for (const p of batch) p.resolve(receipts.get(p.row.id) ?? STORED);
      return [];
    } catch (err) {
      if (isConnectionError(err)) return batch;
      // Refused for a reason no row of it causes (a read-only standby, a full disk, a lock timeout): each caller is told, no split.
      if (batch.length === 1 || !refusedForItsData(err)) {
        this.figures.refused += batch.length;
        for (const p of batch) p.reject(err);
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
      await this.db.query('SELECT 1', [], { timeoutMs: this.answerWithinMs });
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

  /**
   * A journal batch: a row the database refuses for its data is logged and
   * dropped (it can never be written). Any other error stops the replay and
   * keeps the journal for the next try: its writes were acknowledged, and a
   * database that is away, read-only (a standby answering after a failover),
   * out of disk or recreated empty refuses every row for a while, not one.
   */
  private async replayBatch(rows: StoreWrite[]): Promise<void> {
    try {
      await writeBatch(this.db, rows, this.opts.notice, answerWithin(rows, this.answerWithinMs));
    } catch (err) {
      if (isConnectionError(err)) throw err;
      if (!refusedForItsData(err)) {
        const why = (err as Error).message;
        if (why !== this.lastReplayRefusal) this.log.warn({ err: why, code: (err as { code?: string }).code }, 'journaled writes not replayed: the database refuses them for now; kept, and tried again');
        this.lastReplayRefusal = why;
        throw err;
      }
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

  private lastReplayRefusal: string | undefined;

  /** Wait for queued writes; stop recovering. Journaled entries stay for the next start. */
  async close(): Promise<void> {
    while (this.flushing !== undefined) await this.flushing;
    while (this.inFlightBatches > 0) await new Promise<void>((r) => this.idle.push(r));
    this.closed = true;
    if (this.recovering !== undefined) clearTimeout(this.recovering);
  }
}

/**
 * Whether the database refused a write for what a row holds (SQLSTATE classes 22 data exception, 23
 * integrity constraint, 54 program limit such as an index row too large): splitting the batch finds the
 * row, and only it fails. Anything else is about the database now, not about a row.
 */
function refusedForItsData(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && /^(22|23|54)/.test(code);
}

const isGeneration = (r: StoreWrite): r is GenerationEntry => r.kind === 'generation';
const isHistory = (r: StoreWrite): r is HistorySnapshotEntry => r.kind === 'history';

/**
 * One batch: closed-loop generations first, then the entries with the history snapshots, in one
 * transaction (one statement, or one COPY, when it can be: every round trip costs both processes
 * more than the rows of a batch do, BENCHMARKS.md). Duplicates of
 * an id are ignored. Closed-loop outcomes are counted by the store's
 * trigger in the statement that stores them, which answers with the
 * variants' totals (a notice read with the reply): a receipt carries them,
 * or says `duplicate` for an id already stored.
 */
export async function writeBatch(db: SqlClient, rows: readonly StoreWrite[], notice?: LoopNoticeTarget, session?: SessionOptions): Promise<Map<string, WriteReceipt>> {
  const entries = rows.filter((r): r is EntryRow => !isGeneration(r) && !isHistory(r));
  const before: Step[] = rows.filter(isGeneration).map((r) => async (q) => {
    if ((await writeGeneration(q, r.generation)) && notice !== undefined) await q('SELECT pg_notify($1, $2)', [notice.channel, loopNotice(notice.sender, [r.generation])]);
  });
  const history = rows.filter(isHistory).map((r) => ({ ...r.history, entryId: r.id }));
  // History snapshots ride in the entries' statement when there is one (a round trip, not a transaction of four).
  const alongside = history.length > 0 && entries.length > 0 ? history : undefined;
  if (history.length > 0 && alongside === undefined) before.push((q) => writeHistory(q, history));
  const { stored, notices } = await insertRows(db, entries, before, alongside, session);
  return receiptsOf(entries, stored, notices);
}

type Step = (q: Query, stored: Set<string>) => Promise<void>;

/**
 * Entries (after `before`, in the same transaction) in one session: one
 * INSERT per table, rows as one array parameter per column
 * (`INSERT ... SELECT * FROM unnest($1::uuid[], ...)`): a constant-size
 * statement, prepared once per connection, instead of a VALUES list with a
 * parameter per cell; `history` rides in the first INSERT. A batch of one
 * kind, nothing before it, no history and at least the backend's
 * `copy.minRows` rows goes through COPY instead (faster per row on both
 * backends: BENCHMARKS.md, store); COPY has no ON CONFLICT, so a batch that
 * repeats an id already stored (a redelivered NATS message, a replayed
 * journal) fails whole with unique_violation and is written again by the
 * INSERT, which skips the duplicate. Returns the ids stored now (undefined:
 * all of them) and the notices the statements raised.
 */
export async function insertRows(
  db: SqlClient,
  rows: EntryRow[],
  before: Step[] = [],
  history?: readonly HistoryAdd[],
  session?: SessionOptions,
): Promise<{ stored: ReadonlySet<string> | undefined; notices: string[] }> {
  const kind = rows[0]?.kind;
  if (before.length === 0 && history === undefined && kind !== undefined && rows.length >= db.copy.minRows && TABLES[kind].arrayTypes !== undefined && rows.every((r) => r.kind === kind)) {
    try {
      const { notices } = await db.session(false, (_q, copy) => copy(TABLES[kind].table, TABLES[kind].columns, copyText(rows)), session);
      return { stored: undefined, notices };
    } catch (err) {
      if ((err as { code?: string }).code !== '23505') throw err;
    }
  }
  const steps = [...before, ...statementsOf(rows, history)];
  if (steps.length === 0) return { stored: new Set(), notices: [] };
  // One statement is atomic on its own: one round trip instead of BEGIN, the statement, COMMIT.
  const { value, notices } = await db.session(
    steps.length > 1,
    async (q) => {
      const stored = new Set<string>();
      for (const step of steps) await step(q, stored);
      return stored;
    },
    session,
  );
  return { stored: value, notices };
}

/** What the counting triggers raise (migration 9): `prompt_engine_totals` and, per variant a statement moved, `[name, model, generation, prompt_id, ...COUNTED_COLUMNS]`. */
const TOTALS_NOTICE = 'prompt_engine_totals ';

/** Each execution's and rating's receipt: `duplicate` when it was not stored now, else its variant's totals when a trigger counted it. */
function receiptsOf(rows: EntryRow[], stored: ReadonlySet<string> | undefined, notices: string[]): Map<string, WriteReceipt> {
  const receipts = new Map<string, WriteReceipt>();
  // By variant, one receipt shared by its rows; outcomes of two generations of one variant keep the newer generation's totals.
  const byVariant = new Map<string, WriteReceipt & { totals: VariantTotals & { generation: number } }>();
  for (const n of notices) {
    if (!n.startsWith(TOTALS_NOTICE)) continue;
    for (const t of JSON.parse(n.slice(TOTALS_NOTICE.length)) as unknown[][]) {
      const key = `${String(t[0])}\u0000${String(t[1])}\u0000${String(t[3])}`;
      const generation = Number(t[2]);
      if ((byVariant.get(key)?.totals.generation ?? -1) < generation) byVariant.set(key, { status: 'stored', totals: { generation, ...countedTotals(t) } });
    }
  }
  for (const r of rows) {
    if (r.kind !== 'execution' && r.kind !== 'feedback') continue;
    if (stored !== undefined && !stored.has(r.id)) {
      receipts.set(r.id, DUPLICATE);
      continue;
    }
    const experiment = r.meta?.experiment;
    const receipt = experiment === undefined ? undefined : byVariant.get(`${experiment}\u0000${r.meta?.model ?? 'default'}\u0000${String(r.values[1])}`);
    if (receipt !== undefined) receipts.set(r.id, receipt);
  }
  return receipts;
}

/** Entries written inside a caller's transaction (the closed loop's A/B results and evolutions, with the change they record). */
export async function insertRowsIn(q: Query, rows: EntryRow[]): Promise<void> {
  const stored = new Set<string>();
  for (const st of statementsOf(rows)) await st(q, stored);
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

/**
 * One INSERT statement per entry kind present; each adds the ids it stored
 * (not already there) to `stored`. `history` goes into the first of them,
 * as a data-modifying WITH: one statement, atomic on its own.
 */
function statementsOf(rows: EntryRow[], history?: readonly HistoryAdd[]): Step[] {
  const byKind = new Map<EntryKind, EntryRow[]>();
  for (const r of rows) {
    let list = byKind.get(r.kind);
    if (list === undefined) byKind.set(r.kind, (list = []));
    list.push(r);
  }
  return [...byKind].map(([kind, list], i) => {
    const st = insertStatement(kind, list);
    let name = TABLES[kind].arrayTypes === undefined ? undefined : `pe_insert_${kind}`;
    if (i === 0 && history !== undefined) {
      const h = historyInsert(history, st.params.length + 1);
      st.sql = `WITH history AS (${h.sql}) ${st.sql}`;
      st.params.push(...h.params);
      if (name !== undefined) name += '_with_history';
    }
    // The unnest form's text depends on the kind only: prepared once per connection.
    return async (q: Query, stored: Set<string>) => {
      for (const r of await q(st.sql, st.params, name)) stored.add(String(r.id));
    };
  });
}

function insertStatement(kind: EntryKind, list: EntryRow[]): { sql: string; params: SqlParam[] } {
  const spec = TABLES[kind];
  const types = spec.arrayTypes;
  if (types !== undefined) {
    const columns = spec.columns.map((name, i) => ({ name, type: types[i]!, value: (r: EntryRow) => r.values[i] as string | number | boolean | null }));
    return unnestInsert(spec.table, columns, list, 'ON CONFLICT (id) DO NOTHING RETURNING id');
  }
  const cols = spec.columns.map((c) => `"${c}"`).join(',');
  const params: SqlParam[] = [];
  const tuples = list.map((r) => {
    const ph = spec.columns.map((c, i) => {
      params.push(r.values[i] as SqlParam);
      const cast = spec.casts[c];
      return cast ? `$${params.length}::${cast}` : `$${params.length}`;
    });
    return `(${ph.join(',')})`;
  });
  return { sql: `INSERT INTO ${spec.table} (${cols}) VALUES ${tuples.join(',')} ON CONFLICT (id) DO NOTHING RETURNING id`, params };
}

/** A notice's totals (after name, model, generation and prompt id, in COUNTED_COLUMNS order). */
function countedTotals(t: readonly unknown[]): VariantTotals {
  const out = {} as VariantTotals;
  for (let i = 0; i < COUNTED_COLUMNS.length; i++) out[COUNTED_COLUMNS[i]!] = Number(t[i + 4] ?? 0);
  return out;
}
