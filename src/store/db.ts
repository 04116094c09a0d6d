/**
 * The two backends behind one small interface: PostgreSQL through a `pg`
 * pool, or embedded PGlite in a data directory. The store above speaks
 * only `query`, `transaction`, COPY, NOTIFY/LISTEN and leases. Every
 * connection works in the store's own schema (`search_path`), so the
 * tables live beside an app's own (Ecto's `schema_migrations`, `models`,
 * ...) without touching them. A PostgreSQL that cannot be reached surfaces
 * as `OpError('unavailable')` (see `unreachable`), whichever service's
 * query met it.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { PGlite } from '@electric-sql/pglite';
import pg from 'pg';
import { OpError } from '../contract/errors.js';
import { CopyInQuery } from './copyInQuery.js';

export type SqlParam = string | number | boolean | null | Uint8Array | string[] | Array<string | number | boolean | null>;
export type Row = Record<string, unknown>;

/**
 * A statement runner inside a transaction. `prepared` names a statement the
 * hot path runs again and again: PostgreSQL parses and plans it once per
 * connection (PGlite ignores it).
 */
export type Query = (sql: string, params?: SqlParam[], prepared?: string) => Promise<Row[]>;

/** A column of a multi-row insert: its name, its PostgreSQL type, and its value in a row. */
export interface UnnestColumn<R> {
  name: string;
  type: string;
  value(row: R): string | number | boolean | null;
}

/**
 * Every row in one `INSERT ... SELECT * FROM unnest($1::type[], ...)`: one
 * array parameter per column, so the statement's text does not depend on
 * the number of rows (it can be prepared once). `tail` follows it
 * (`ON CONFLICT ...`, `RETURNING ...`).
 */
export function unnestInsert<R>(table: string, columns: ReadonlyArray<UnnestColumn<R>>, rows: readonly R[], tail = '', firstParam = 1): { sql: string; params: SqlParam[] } {
  const names = columns.map((c) => `"${c.name}"`).join(', ');
  const arrays = columns.map((c, i) => `$${i + firstParam}::${c.type}[]`).join(', ');
  return {
    sql: `INSERT INTO ${table} (${names}) SELECT * FROM unnest(${arrays})${tail === '' ? '' : ` ${tail}`}`,
    params: columns.map((c) => rows.map((r) => c.value(r))),
  };
}

/**
 * A lease: a session-level advisory lock held on a connection of its own for
 * as long as the holder lives (it dies with the connection, so another
 * instance takes it over when the holder dies). Writes made through
 * `transaction` are fenced: each first checks, in its own transaction, that
 * the lock is still held by the lease's connection, and fails once it is
 * not, instead of racing the new holder.
 */
export interface Lease {
  /** Run `fn` in a transaction on a pooled connection, fenced by a look at the lease's lock (`pg_locks`); rejects once the lease is lost. */
  transaction<T>(fn: (q: Query, copy: CopyInTransaction) => Promise<T>): Promise<T>;
  readonly held: boolean;
  /** `f` runs once, when the lease is lost (its connection died or stopped answering). */
  onLost(f: () => void): void;
  release(): Promise<void>;
}

export interface SqlClient {
  readonly backend: 'postgres' | 'pglite';
  /** The schema every table lives in. */
  readonly schema: string;
  /**
   * One statement on a pooled connection. PostgreSQL: under a time limit, `opts.timeoutMs` or the
   * client's (`poolAnswerMs`, default POOL_ANSWER_MS): past it the connection is cut and the
   * statement fails as `unavailable`, as a session's does.
   */
  query<R extends Row = Row>(sql: string, params?: SqlParam[], opts?: SessionOptions): Promise<R[]>;
  /**
   * Run `fn` in one transaction (one connection); `copy` loads rows in COPY's text format inside it.
   * PostgreSQL: under the same time limit as `query` (a transaction cut at its COMMIT may have committed).
   */
  transaction<T>(fn: (q: Query, copy: CopyInTransaction) => Promise<T>, opts?: SessionOptions): Promise<T>;
  /**
   * Run `fn` on one connection (in one transaction when `transaction`),
   * with the text of every notice its statements raised (the closed loop's
   * counting trigger answers the writer this way, in the same round trip).
   */
  session<T>(transaction: boolean, fn: (q: Query, copy: CopyInTransaction) => Promise<T>, opts?: SessionOptions): Promise<{ value: T; notices: string[] }>;
  /**
   * Hold the advisory lock `key` until released or the process dies, or
   * undefined at once when another session holds it. PGlite (one process)
   * always grants it.
   */
  lease(key: number): Promise<Lease | undefined>;
  /** Bulk load of rows already in COPY's text format (one statement, so atomic on its own). */
  readonly copy: CopyIn;
  /** Announce `payload` on `channel` (NOTIFY); a no-op on PGlite. */
  notify(channel: string, payload: string): Promise<void>;
  /**
   * Call `onMessage` for every NOTIFY on `channel` from any session; resolves once the first try
   * ended: listening, or (the server unreachable) `onFirstError` told why. Never given up: the
   * listening connection is opened again every second while the server is away, at start as after
   * a drop; notifications sent meanwhile are lost, so `onRelistened` runs each time it opens after
   * such a time, for the caller to catch up from the tables. Returns a stop function.
   */
  listen(channel: string, onMessage: (payload: string) => void, onRelistened?: () => void, onFirstError?: (err: unknown) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

export interface SessionOptions {
  /**
   * PostgreSQL: the most the whole session may take. Past it its connection is cut (no reset comes through
   * a silent network, and a frozen pooled connection would hold the work until TCP gives up, hours later),
   * and the session fails as `unavailable` (code ETIMEDOUT), as if the database had gone away; the
   * server ends its statement by then and a second (`statement_timeout`: the session's limit when it
   * is longer than the pool's, else the pool's, so a cut 4 s write may run on there up to 61 s). A
   * transaction cut at its COMMIT may have committed: what runs under a time limit must be idempotent.
   */
  timeoutMs?: number;
}

/**
 * How long a plain statement (`query`) or a transaction may take on PostgreSQL (a wait for a lock
 * included) before its connection is cut. Without a limit, work waiting through a silent network (a
 * partition, a host gone) holds its pooled connection until TCP gives up, a quarter of an hour later;
 * with the pool full, the tracking writer's probe finds no connection, and writes stay journaled even
 * once the database answers again. Generous: work this slow is past every caller's deadline; the
 * trainer's reads and the migrations give their own.
 */
export const POOL_ANSWER_MS = 60_000;
/** The trainer's reads (a million rows each at most) may take this long instead: `query`'s options for them. */
export const TRAINING_READ: SessionOptions = { timeoutMs: 600_000 };
/** A migration (an index built over a large table) may take this long. */
export const MIGRATION_WORK: SessionOptions = { timeoutMs: 3_600_000 };
/** A NOTIFY (the closed loop's heartbeat, a few times a second) is small: unanswered this long, its connection is cut. */
const NOTIFY_ANSWER_MS = 4_000;
/**
 * The server's own end to a statement (`statement_timeout`): this long after the session's limit, so
 * our cut comes first and the caller sees `unavailable`. A connection we cut is not noticed by a
 * backend busy with a statement (it reads its socket only between statements): a statement waiting
 * on a lock, or slow on a loaded server, would otherwise run on, holding its locks, long after its
 * caller had given up and written again.
 */
const SERVER_STATEMENT_MARGIN_MS = 1_000;

/** COPY of rows already in COPY's text format, inside a transaction. */
export type CopyInTransaction = (table: string, columns: readonly string[], text: string) => Promise<void>;

export interface CopyIn {
  /** Smallest batch worth a COPY: on PostgreSQL its extra round trip (CopyIn, data, CopyDone) costs more than it saves below this. */
  readonly minRows: number;
  write(table: string, columns: readonly string[], text: string): Promise<void>;
}

const copySql = (table: string, columns: readonly string[], source: string): string => `COPY ${table} (${columns.map((c) => `"${c}"`).join(',')}) FROM ${source}`;

/** A schema name the store accepts: plain lower-case SQL identifiers only, so it never needs quoting. */
export const SCHEMA_RE = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * Session settings every connection starts with: the store's schema as the
 * only search path (nothing resolves to an app's table in `public`),
 * notices on (the counting trigger's answer), and the store's own
 * `prompt_engine.*` settings (read by its trigger).
 */
function sessionSettings(schema: string, settings: Readonly<Record<string, string>>): Array<[string, string]> {
  for (const [k, v] of Object.entries(settings)) if (!/^prompt_engine\.[a-z_]+$/.test(k) || !/^[\w.:@-]*$/.test(v)) throw new Error(`session setting ${k}=${v}: not a plain prompt_engine.* name and value`);
  return [['search_path', schema], ['client_min_messages', 'notice'], ...Object.entries(settings)];
}

export async function openPostgres(url: string, opts: { max?: number; schema: string; settings?: Readonly<Record<string, string>>; poolAnswerMs?: number }): Promise<SqlClient> {
  if (!SCHEMA_RE.test(opts.schema)) throw new Error(`schema ${JSON.stringify(opts.schema)}: expected a lower-case SQL identifier (letters, digits, _)`);
  // Every connection (pool, listener, lease) starts with them (startup options, no round trip).
  const options = sessionSettings(opts.schema, opts.settings ?? {})
    .map(([k, v]) => `-c ${k}=${v}`)
    .join(' ');
  // Group commit takes up to 3; the closed loop's decisions, refreshes and reads the rest. Its connections
  // also start with the server's probes of them (SERVER_KEEPALIVE; as startup options: a statement sent on
  // 'connect' would run beside the first one the pool sends, which node-postgres warns of on stderr).
  // Every statement on them ends on the server by the pool's limit (and a margin); a session with a longer limit
  // (the trainer's reads, the migrations) raises it for itself.
  const poolAnswerMs = opts.poolAnswerMs ?? POOL_ANSWER_MS;
  const serverStatementMs = poolAnswerMs + SERVER_STATEMENT_MARGIN_MS;
  const poolOptions = `${options} ${SERVER_KEEPALIVE_OPTIONS} -c statement_timeout=${serverStatementMs}`;
  const pool = new pg.Pool({ connectionString: url, options: poolOptions, max: opts.max ?? 6, connectionTimeoutMillis: 2_000, idleTimeoutMillis: 30_000 });
  // An idle client losing its server (restart) must not crash the process.
  pool.on('error', () => undefined);
  // Nor one in use: the pool listens only to its idle clients, and a client whose connection ends (a
  // restart, a terminated backend, a dropped proxy) emits 'error' whatever it is doing. Its queries fail
  // with the connection error, which is how the store sees it.
  pool.on('connect', (client) => void client.on('error', () => undefined));
  // bigint columns (seq, test_duration) as JS numbers: they stay below 2^53 here.
  const types = { getTypeParser: (oid: number, format?: 'text' | 'binary') => (oid === 20 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format)) };
  const session: SqlClient['session'] = async (inTransaction, fn, sessionOpts = {}) => {
    const client = await pool.connect().catch((err: unknown) => Promise.reject(unreachable(err)));
    const notices: string[] = [];
    const onNotice = (n: { message?: string }): number => notices.push(n.message ?? '');
    client.on('notice', onNotice);
    let broken = false;
    const limit = sessionOpts.timeoutMs;
    // Cutting the socket fails every statement waiting on it with this error (pg hands it to them).
    const timer = limit === undefined ? undefined : setTimeout(() => cut(client, unanswered(limit)), limit);
    // Longer than the connection's own statement_timeout: raised for this session (SET LOCAL ends with the transaction; SET is reset below).
    const longer = limit !== undefined && limit + SERVER_STATEMENT_MARGIN_MS > serverStatementMs ? `statement_timeout = ${limit + SERVER_STATEMENT_MARGIN_MS}` : undefined;
    let resetAfter = false;
    try {
      if (inTransaction) await client.query('BEGIN');
      if (longer !== undefined) {
        await client.query(inTransaction ? `SET LOCAL ${longer}` : `SET ${longer}`);
        resetAfter = !inTransaction;
      }
      const value = await fn(
        async (sql, params = [], prepared) => (await client.query({ name: prepared, text: sql, values: params, types })).rows as Row[],
        (table, columns, text) => copyOn(client, table, columns, text),
      );
      if (inTransaction) await client.query('COMMIT');
      return { value, notices };
    } catch (err) {
      broken = isConnectionError(err);
      if (!broken && inTransaction) await client.query('ROLLBACK').catch(() => undefined);
      throw unreachable(err);
    } finally {
      // Back to the pool's limit before the connection goes back (one that cannot be reset is not reused).
      if (resetAfter && !broken) await client.query('RESET statement_timeout').catch(() => (broken = true));
      clearTimeout(timer);
      client.off('notice', onNotice);
      client.release(broken);
    }
  };
  const poolLimit = (given: SessionOptions): SessionOptions => ({ timeoutMs: given.timeoutMs ?? poolAnswerMs });
  const transaction: SqlClient['transaction'] = async (fn, txOpts = {}) => (await session(true, fn, poolLimit(txOpts))).value;
  return {
    backend: 'postgres',
    schema: opts.schema,
    async query<R extends Row>(sql: string, params: SqlParam[] = [], queryOpts: SessionOptions = {}) {
      return (await session(false, (q) => q(sql, params), poolLimit(queryOpts))).value as R[];
    },
    transaction,
    session,
    lease: (key) => pgLease(url, options, key, transaction),
    copy: {
      minRows: 64,
      async write(table, columns, text) {
        await session(false, (_q, copy) => copy(table, columns, text), poolLimit({}));
      },
    },
    async notify(channel, payload) {
      await session(false, (q) => q('SELECT pg_notify($1, $2)', [channel, payload]), { timeoutMs: NOTIFY_ANSWER_MS });
    },
    async listen(channel, onMessage, onRelistened, onFirstError) {
      // A connection of its own for as long as we listen (a pooled one would be handed to others);
      // reconnected every second while the server is away.
      let stopped = false;
      let client: pg.Client | undefined;
      /** Nobody listened for a while (the first try failed, or the connection dropped): what was sent then is lost. */
      let missed = false;
      let retrying = false;
      const retry = (): void => {
        if (stopped || retrying) return;
        missed = true;
        retrying = true;
        setTimeout(() => {
          retrying = false;
          start().catch(retry);
        }, 1_000).unref();
      };
      const start = async (): Promise<void> => {
        const c = new pg.Client({ connectionString: url, options, connectionTimeoutMillis: 2_000 });
        c.on('error', () => undefined);
        c.on('notification', (m) => {
          if (m.channel === channel) onMessage(m.payload ?? '');
        });
        c.on('end', () => {
          if (client === c) retry();
        });
        try {
          await c.connect();
          await c.query(`LISTEN "${channel.replace(/"/g, '')}"`);
        } catch (err) {
          await c.end().catch(() => undefined);
          throw err;
        }
        if (stopped) {
          await c.end().catch(() => undefined);
          return;
        }
        client = c;
        if (missed) onRelistened?.();
        missed = false;
      };
      try {
        await start();
      } catch (err) {
        onFirstError?.(unreachable(err));
        retry();
      }
      return async () => {
        stopped = true;
        await client?.end().catch(() => undefined);
      };
    },
    close: () => pool.end(),
  };
}

function copyOn(client: pg.PoolClient, table: string, columns: readonly string[], text: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    client.query(new CopyInQuery(copySql(table, columns, 'STDIN'), Buffer.from(text, 'utf8'), (err) => (err === undefined ? resolve() : reject(err))));
  });
}

const LEASE_KEEPALIVE_MS = 1_000;
/** A lease's check (or its release) with no answer within this is a lost connection: a silent partition sends no reset. */
const LEASE_ANSWER_MS = 5_000;
/**
 * The server's side of each of our connections (the pool's and a lease's)
 * probes its client after 5 s of silence, every 2 s, and gives up after 3
 * unanswered probes, or after 11 s of its own data unacknowledged: a session
 * whose client died or was cut off (no reset ever comes: a silent network, or
 * a write this side cut for want of an answer) ends within about 11 s, with
 * its locks (a lease's advisory lock, a cut transaction's row locks), not
 * after the operating system's default of two hours. Per-session settings any
 * user may set: the pool's connections start with the keepalives (startup
 * options, beside the schema's: an idle session, as one cut in its
 * transaction is, ends within about 11 s); the lease, whose connection was
 * opened before, sets all four by a statement once it holds its lock.
 * Ignored on a Unix socket; behind a proxy they probe the proxy.
 */
const SERVER_PROBES: ReadonlyArray<[string, number]> = [
  ['tcp_keepalives_idle', 5],
  ['tcp_keepalives_interval', 2],
  ['tcp_keepalives_count', 3],
  ['tcp_user_timeout', 11_000],
];
/** The lease sets them by a statement once it holds its lock (best effort: a server that refuses them still gives a lease). */
const SERVER_KEEPALIVE = SERVER_PROBES.map(([k, v]) => `SET ${k} = ${v}`).join('; ');
/**
 * The pool's connections start with the keepalives (every supported server knows them). Not with
 * tcp_user_timeout: a server before PostgreSQL 12 refuses a connection whose startup names a setting it
 * lacks, and a statement would run beside the pool's first one (node-postgres warns of that on stderr).
 */
const SERVER_KEEPALIVE_OPTIONS = SERVER_PROBES.filter(([k]) => k !== 'tcp_user_timeout')
  .map(([k, v]) => `-c ${k}=${v}`)
  .join(' ');
/** A statement node-postgres gives up on after LEASE_ANSWER_MS (its per-query `query_timeout`, which @types/pg does not declare). */
const timed = (text: string, values: SqlParam[] = []): pg.QueryConfig => ({ text, values, query_timeout: LEASE_ANSWER_MS }) as pg.QueryConfig;

/** Why a session's connection was cut at its time limit (a connection error: the work is `unavailable`, and may have committed). */
export function unanswered(limitMs: number): Error {
  return Object.assign(new Error(`the database did not answer within ${limitMs} ms (a silent network?): connection cut`), { code: 'ETIMEDOUT' });
}

/**
 * Close a client's socket at once, without the goodbye `end()` waits for (which a silent network never
 * answers, leaving the socket half-open until the operating system gives up on it). The server sees the
 * connection close as it would after `end()`; its statements in flight fail with `err`. node-postgres has
 * no public way to do this: its connection's stream is reached by name.
 */
function cut(client: pg.Client | pg.PoolClient, err?: Error): void {
  (client as unknown as { connection?: { stream?: { destroy(err?: Error): void } } }).connection?.stream?.destroy(err);
}

/**
 * A PostgreSQL lease: its own client holding `pg_try_advisory_lock`, and a
 * keep-alive query every second, so a connection that died quietly (the
 * server restarted, the network went) is noticed and the lease given up.
 * Transactions run on the pool (several at once), each fenced by a look at
 * `pg_locks` for the lock held by the lease's backend.
 */
async function pgLease(url: string, options: string, key: number, transaction: SqlClient['transaction']): Promise<Lease | undefined> {
  const client = new pg.Client({ connectionString: url, options, connectionTimeoutMillis: 2_000, keepAlive: true });
  let held = false;
  const lostHandlers: Array<() => void> = [];
  let keepAlive: NodeJS.Timeout | undefined;
  const lose = (): void => {
    if (!held) return;
    held = false;
    clearInterval(keepAlive);
    // Lost: no goodbye to wait for (the network may be silent); the server frees the lock when it sees the close.
    cut(client);
    for (const f of lostHandlers.splice(0)) f();
  };
  client.on('error', lose);
  client.on('end', lose);
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => undefined);
    throw unreachable(err);
  }
  const got = await client.query<{ ok: boolean; pid: number }>('SELECT pg_try_advisory_lock($1) AS ok, pg_backend_pid() AS pid', [key]).then(
    (r) => r.rows[0],
    (err: unknown) => Promise.reject(unreachable(err)),
  );
  if (got?.ok !== true) {
    await client.end().catch(() => undefined);
    return undefined;
  }
  // Only once held (the others try every second). Best effort: a server that refuses them still gives a lease, freed when its TCP gives up.
  await client.query(timed(SERVER_KEEPALIVE)).catch(() => undefined);
  held = true;
  const holder = got.pid;
  let checking = false;
  keepAlive = setInterval(() => {
    if (checking) return;
    checking = true;
    void client
      .query(timed('SELECT 1'))
      .catch(lose)
      .finally(() => (checking = false));
  }, LEASE_KEEPALIVE_MS);
  keepAlive.unref();
  return {
    get held() {
      return held;
    },
    transaction: (fn) =>
      // Known lost: refused at once, without waiting on the database (a silent partition would hold a pooled connection too).
      !held ? Promise.reject(new OpError('unavailable', 'the lease was lost')) : transaction(async (q, copy) => {
        // A one-int advisory key is classid 0, objid key, objsubid 1 in pg_locks.
        const fence = await q(`SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = 0 AND objid = $1 AND objsubid = 1 AND pid = $2 AND granted`, [key, holder]);
        if (!held || fence.length === 0) {
          lose();
          throw new OpError('unavailable', 'the lease was lost');
        }
        return fn(q, copy);
      }),
    onLost: (f) => {
      if (held) lostHandlers.push(f);
      else f();
    },
    release: async () => {
      if (!held) return;
      held = false;
      clearInterval(keepAlive);
      await client.query(timed('SELECT pg_advisory_unlock($1)', [key])).catch(() => undefined);
      // Ending waits on the server's goodbye, which a silent partition never sends: then the socket is cut.
      const ended = await Promise.race([client.end().then(() => true, () => true), new Promise<boolean>((r) => setTimeout(() => r(false), LEASE_ANSWER_MS).unref())]);
      if (!ended) cut(client);
    },
  };
}

/**
 * PGlite keeps its database in one process's memory and writes the directory
 * as it likes: two processes on one directory corrupt it. A lock file with
 * the owner's pid makes the second one fail with a clear message instead
 * (several sidecars want PostgreSQL, or a data directory each).
 */
function lockDir(dir: string): () => void {
  const lock = path.join(dir, 'prompt-engine.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(lock, String(process.pid), { flag: 'wx' });
      return () => fs.rmSync(lock, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const owner = Number(fs.readFileSync(lock, 'utf8'));
      if (Number.isInteger(owner) && owner !== process.pid && pidAlive(owner))
        throw new Error(`the PGlite data directory ${dir} is in use by process ${owner}: give each sidecar its own PROMPT_ENGINE_DATA_DIR, or share a PostgreSQL through DATABASE_URL`);
      fs.rmSync(lock, { force: true }); // left by a process that is gone
    }
  }
  throw new Error(`could not lock ${dir}`);
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function openPglite(dir: string, opts: { schema: string; settings?: Readonly<Record<string, string>> }): Promise<SqlClient> {
  if (!SCHEMA_RE.test(opts.schema)) throw new Error(`schema ${JSON.stringify(opts.schema)}: expected a lower-case SQL identifier (letters, digits, _)`);
  fs.mkdirSync(dir, { recursive: true });
  const unlock = lockDir(dir);
  const { PGlite } = await import('@electric-sql/pglite');
  let db: PGlite;
  try {
    db = await PGlite.create(dir);
    // One connection for the life of the process: settings made once hold for every statement.
    for (const [k, v] of sessionSettings(opts.schema, opts.settings ?? {})) await db.query('SELECT set_config($1, $2, false)', [k, v]);
  } catch (err) {
    unlock();
    throw err;
  }
  const fix = (rows: Row[]): Row[] => rows.map((r) => (typeof r.seq === 'bigint' ? { ...r, seq: Number(r.seq) } : r));
  const session: SqlClient['session'] = async (inTransaction, fn) => {
    const notices: string[] = [];
    const onNotice = (n: { message?: string }): number => notices.push(n.message ?? '');
    const run = (runner: Pick<PGlite, 'query'>) =>
      fn(
        async (sql, params = []) => fix((await runner.query<Row>(sql, params, { onNotice })).rows),
        async (table, columns, text) => void (await runner.query(copySql(table, columns, `'/dev/blob'`), [], { blob: new Blob([text]), onNotice })),
      );
    const value = inTransaction ? await db.transaction((tx) => run(tx)) : await run(db);
    return { value, notices };
  };
  const transaction: SqlClient['transaction'] = async (fn) => (await session(true, fn)).value;
  return {
    backend: 'pglite',
    schema: opts.schema,
    async query<R extends Row>(sql: string, params: SqlParam[] = []) {
      return fix((await db.query<Row>(sql, params)).rows) as R[];
    },
    transaction,
    session,
    // One process owns the directory: it always holds every lease.
    lease: async () => ({ held: true, transaction, onLost: () => undefined, release: async () => undefined }),
    // PGlite reads COPY data from a Blob at /dev/blob: ~1.4× the rows/s of the unnest INSERT at any batch size (measured, 2–512 rows).
    copy: {
      minRows: 1,
      async write(table, columns, text) {
        await db.query(copySql(table, columns, `'/dev/blob'`), [], { blob: new Blob([text]) });
      },
    },
    notify: async () => undefined,
    listen: async () => async () => undefined,
    close: async () => {
      await db.close();
      unlock();
    },
  };
}

/**
 * A connection error as callers should see it: `{:error, {:unavailable, "database unreachable: ..."}}`
 * rather than `internal`. It keeps the original `code` and message, so
 * `isConnectionError` still recognises it (the group-commit writer journals on it).
 */
export function unreachable(err: unknown): unknown {
  // Our own limit, as the server applies it (statement_timeout): reached only when our cut came late (a busy event loop).
  if (isStatementTimeout(err)) return Object.assign(new OpError('unavailable', 'the database did not finish the statement within its time limit'), { code: '57014', cause: err });
  if (err instanceof OpError || !isConnectionError(err)) return err;
  const e = err as Error & { code?: string };
  // Node's AggregateError (every address of a host refused) has an empty message: its code says it.
  const why = e.message !== '' ? e.message : (e.code ?? 'connection failed');
  return Object.assign(new OpError('unavailable', `database unreachable: ${why}`), { code: e.code, cause: err });
}

/** Whether `err` says the database was away or did not answer in time (raw, or as `unavailable`): work that failed so may have committed. */
export function isUnavailable(err: unknown): boolean {
  return isConnectionError(err) || isStatementTimeout(err) || (err instanceof OpError && err.reason === 'unavailable');
}

/** The server ended a statement at the session's `statement_timeout` (SQLSTATE 57014; not a cancel asked by hand). */
function isStatementTimeout(err: unknown): boolean {
  return err instanceof Error && !(err instanceof OpError) && (err as { code?: string }).code === '57014' && /statement timeout/i.test(err.message);
}

/** Errors that mean "the database is not reachable right now" (as opposed to a bad statement). */
export function isConnectionError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: string }).code ?? '';
  if (['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ENOTFOUND', 'EHOSTUNREACH', '57P01', '57P02', '57P03', '53300'].includes(code)) return true;
  if (code.startsWith('08')) return true;
  return /Connection terminated|connection timeout|terminating connection|Client has encountered a connection error|not queryable|timeout exceeded when trying to connect/i.test(err.message);
}
