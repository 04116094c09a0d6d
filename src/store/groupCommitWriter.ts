/**
 * Group commit: concurrent `track_*` writes are coalesced into one INSERT
 * per batch. Writes that arrive while batches commit form the next batch;
 * on PostgreSQL up to `maxInFlight` batches commit at once on the pool's
 * connections, what waits shared evenly among the free ones (a caller that
 * awaits each write still sees its writes committed in its order; the
 * order across callers is not promised), on PGlite one. A write is answered only after its row is committed — or,
 * while the database is unreachable, after it is fsync'd to the journal,
 * which a recovery loop replays in order when the database returns; while
 * the journal holds entries, one batch at a time.
 */
import type { Logger } from 'pino';
import type { SqlClient, SqlParam } from './db.js';
import { isConnectionError } from './db.js';
import { TABLES, type EntryKind, type EntryRow } from './entries.js';
import type { Journal } from './journal.js';

interface Pending {
  row: EntryRow;
  resolve(): void;
  reject(err: unknown): void;
}

export interface WriterFigures {
  batches: number;
  rows: number;
  journaled: number;
  replayed: number;
  db_up: boolean;
}

export class GroupCommitWriter {
  private queue: Pending[] = [];
  private flushing: Promise<void> | undefined;
  private inFlightBatches = 0;
  private idle: Array<() => void> = [];
  private dbUp = true;
  private recovering: NodeJS.Timeout | undefined;
  private closed = false;
  readonly figures: WriterFigures = { batches: 0, rows: 0, journaled: 0, replayed: 0, db_up: true };

  constructor(
    private readonly db: SqlClient,
    private readonly journal: Journal,
    private readonly log: Logger,
    private readonly opts: { maxBatch: number; recoverEveryMs: number; maxInFlight?: number; onRecovered?: () => Promise<void> } = { maxBatch: 500, recoverEveryMs: 500 },
  ) {}

  /** Resolves when the row is committed (or durably journaled). */
  write(row: EntryRow): Promise<void> {
    if (this.closed) return Promise.reject(new Error('the store is closed'));
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ row, resolve, reject });
      // Let the writes of this tick join the first batch.
      if (this.flushing === undefined) this.flushing = new Promise<void>((r) => setImmediate(r)).then(() => this.pump());
    });
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
      // one connection idle while the other did all the work: measured, ~25% fewer rows/s).
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
    const rows = batch.map((p) => p.row);
    if (this.dbUp && this.journal.depth === 0) {
      try {
        await insertRows(this.db, rows);
        this.figures.batches++;
        this.figures.rows += rows.length;
        for (const p of batch) p.resolve();
        return;
      } catch (err) {
        if (!isConnectionError(err)) {
          for (const p of batch) p.reject(err);
          return;
        }
        this.log.warn({ err: (err as Error).message }, 'database unreachable: journaling tracking writes');
        this.dbUp = false;
        this.figures.db_up = false;
        this.scheduleRecovery(this.opts.recoverEveryMs);
      }
    }
    try {
      await this.journal.append(rows);
      this.figures.journaled += rows.length;
      for (const p of batch) p.resolve();
      // Whatever sits in the journal gets replayed, also if recovery finished while we appended.
      this.scheduleRecovery(this.dbUp ? 0 : this.opts.recoverEveryMs);
    } catch (err) {
      for (const p of batch) p.reject(err);
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
      const n = await this.journal.replay((rows) => insertRows(this.db, rows), this.opts.maxBatch);
      this.figures.replayed += n;
      if (this.journal.depth === 0) {
        this.dbUp = true;
        this.figures.db_up = true;
        if (n > 0) this.log.info({ replayed: n }, 'database back: journal replayed');
        return;
      }
    } catch (err) {
      this.log.debug({ err: (err as Error).message }, 'database still unreachable');
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

/**
 * One INSERT per table, all in one transaction; duplicates of an id are
 * ignored. Rows travel as one array parameter per column
 * (`INSERT ... SELECT * FROM unnest($1::uuid[], ...)`): a constant-size
 * statement that PostgreSQL parses once per batch, instead of a VALUES list
 * with a parameter per cell. A batch of one kind and at least the backend's
 * `copy.minRows` rows goes through COPY instead (~1.4× the rows/s of the
 * unnest INSERT per batch on both backends, measured); COPY has no ON CONFLICT, so a batch
 * that repeats an id already stored (a redelivered NATS message, a replayed
 * journal) fails whole with unique_violation and is written again by the
 * INSERT, which skips the duplicate.
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
  return insertRowsByStatement(db, rows);
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

async function insertRowsByStatement(db: SqlClient, rows: EntryRow[]): Promise<void> {
  const byKind = new Map<EntryKind, EntryRow[]>();
  for (const r of rows) {
    let list = byKind.get(r.kind);
    if (list === undefined) byKind.set(r.kind, (list = []));
    list.push(r);
  }
  const statements = [...byKind].map(([kind, list]) => insertStatement(kind, list));
  // One statement is atomic on its own: one round trip instead of BEGIN, INSERT, COMMIT.
  if (statements.length === 1) {
    await db.query(statements[0]!.sql, statements[0]!.params);
    return;
  }
  await db.transaction(async (q) => {
    for (const st of statements) await q(st.sql, st.params);
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
