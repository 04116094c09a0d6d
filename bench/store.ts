/**
 * Sustained tracking writes/s into PostgreSQL through the store (group
 * commit), beside a raw COPY of the same rows (pg-copy-streams: the floor of
 * what PostgreSQL can ingest) and per-row INSERTs (the naive baseline), in
 * the same run, rounds alternating between the store and COPY; then the
 * same store path and per-row INSERT on PGlite.
 *   npm run build && bash scripts/with-services.sh node dist/bench/store.js
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { record, type Term } from '../src/codec/terms.js';
import { createLogger } from '../src/log.js';
import { openPglite } from '../src/store/db.js';
import { parseEntry, TABLES } from '../src/store/entries.js';
import { DEFAULT_SCHEMA, TrackingStore } from '../src/store/trackingStore.js';
import { copyText } from '../src/store/groupCommitWriter.js';
import { createDatabase } from '../test/helpers/pg.js';

const progress = (m: string): void => void process.stderr.write(`[bench:store] ${m}\n`);
const base = process.env.TEST_DATABASE_URL ?? process.env.DATABASE_URL;
if (!base) throw new Error('run through scripts/with-services.sh (TEST_DATABASE_URL)');
const N = Number(process.env.BENCH_ROWS ?? 50_000);
const NAIVE = Number(process.env.BENCH_NAIVE_ROWS ?? 5_000);
const log = createLogger('silent');

const entry = (i: number) =>
  record({ prompt_id: `p_${i % 50}`, execution_time_ms: 100 + (i % 900), success: i % 3 !== 0, confidence_score: 0.75, context_signature: 'sig', response_length: 640, metadata: { model: 'vicuna-13b', task: 'bench' } as unknown as Term });

/** A fresh database for one round (the services' temporary server goes away with them). */
const freshDb = async (prefix: string): Promise<string> => (await createDatabase(base!, prefix)).url;

async function storePath(databaseUrl: string | undefined, n: number): Promise<number> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-bench-store-'));
  const store = await TrackingStore.open({ databaseUrl, dataDir, log });
  await Promise.all(Array.from({ length: 2_000 }, (_, i) => store.track('execution', entry(i)))); // warm-up
  // The entries as a caller holds them (decoded terms), made before the clock starts as COPY's rows are;
  // validating them, giving them ids and timestamps is the store's work and is timed.
  const entries = Array.from({ length: n }, (_, i) => entry(i));
  const t0 = performance.now();
  // A sustained load: 1,000 concurrent writers, each writing its next entry when the last is acknowledged.
  let next = 0;
  await Promise.all(
    Array.from({ length: 1_000 }, async () => {
      while (next < n) await store.track('execution', entries[next++]!);
    }),
  );
  const rate = n / ((performance.now() - t0) / 1000);
  await store.close();
  fs.rmSync(dataDir, { recursive: true, force: true });
  return rate;
}

/** The bench's first `n` entries in COPY's text format, made the way the store's batches make theirs (before any clock starts). */
function copyRows(n: number): string {
  return copyText(Array.from({ length: n }, (_, i) => parseEntry('execution', entry(i))));
}

async function copyPath(url: string, n: number): Promise<number> {
  const c = new pg.Client({ connectionString: url, options: `-c search_path=${DEFAULT_SCHEMA}` });
  await c.connect();
  const spec = TABLES.execution;
  const text = copyRows(n);
  const t0 = performance.now();
  await pipeline(Readable.from([text]), c.query(copyFrom(`COPY ${spec.table} (${spec.columns.map((x) => `"${x}"`).join(',')}) FROM STDIN`)));
  const rate = n / ((performance.now() - t0) / 1000);
  await c.end();
  return rate;
}

/** The naive baseline: one autocommit INSERT per entry. */
const ONE_ROW_INSERT = (() => {
  const spec = TABLES.execution;
  return `INSERT INTO ${spec.table} (${spec.columns.map((x) => `"${x}"`).join(',')}) VALUES (${spec.columns.map((x, i) => `$${i + 1}${spec.casts[x] ? `::${spec.casts[x]}` : ''}`).join(',')})`;
})();

async function naivePg(url: string, n: number): Promise<number> {
  const c = new pg.Client({ connectionString: url, options: `-c search_path=${DEFAULT_SCHEMA}` });
  await c.connect();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await c.query(ONE_ROW_INSERT, parseEntry('execution', entry(i)).values);
  const rate = n / ((performance.now() - t0) / 1000);
  await c.end();
  return rate;
}

async function naivePglite(n: number): Promise<number> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-bench-pglite-'));
  const store = await TrackingStore.open({ dataDir, log }); // creates the schema
  await store.close();
  const db = await openPglite(path.join(dataDir, 'pglite'), { schema: DEFAULT_SCHEMA });
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await db.query(ONE_ROW_INSERT, parseEntry('execution', entry(i)).values);
  const rate = n / ((performance.now() - t0) / 1000);
  await db.close();
  fs.rmSync(dataDir, { recursive: true, force: true });
  return rate;
}

/** PGlite's floor: one COPY of all rows from a Blob (what the store's batches do), rows made before the clock starts. */
async function copyPglite(n: number): Promise<number> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-bench-pglite-copy-'));
  await (await TrackingStore.open({ dataDir, log })).close(); // creates the schema
  const db = await openPglite(path.join(dataDir, 'pglite'), { schema: DEFAULT_SCHEMA });
  const spec = TABLES.execution;
  const text = copyRows(n);
  const t0 = performance.now();
  await db.copy.write(spec.table, spec.columns, text);
  const rate = n / ((performance.now() - t0) / 1000);
  await db.close();
  fs.rmSync(dataDir, { recursive: true, force: true });
  return rate;
}

const f = (x: number): string => Math.round(x).toLocaleString('en-US');
// Rounds alternate between the store and raw COPY (each into a fresh database), and each figure is
// the best of its rounds: a machine that speeds up or slows down during the run weighs on both alike.
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
let pgStore = 0;
let pgCopy = 0;
for (let r = 1; r <= ROUNDS; r++) {
  progress(`PostgreSQL round ${r}/${ROUNDS}: store (group commit), ${N} entries`);
  pgStore = Math.max(pgStore, await storePath(await freshDb('pe_bench_store'), N));
  progress(`PostgreSQL round ${r}/${ROUNDS}: raw COPY, ${N} rows`);
  const copyUrl = await freshDb('pe_bench_copy');
  await (await TrackingStore.open({ databaseUrl: copyUrl, dataDir: fs.mkdtempSync(path.join(os.tmpdir(), 'pe-b-')), log })).close();
  pgCopy = Math.max(pgCopy, await copyPath(copyUrl, N));
}
progress(`PostgreSQL: per-row INSERT, ${NAIVE} rows`);
const naiveUrl = await freshDb('pe_bench_naive');
await (await TrackingStore.open({ databaseUrl: naiveUrl, dataDir: fs.mkdtempSync(path.join(os.tmpdir(), 'pe-b-')), log })).close();
const pgNaive = await naivePg(naiveUrl, NAIVE);
let liteStore = 0;
let liteCopy = 0;
for (let r = 1; r <= ROUNDS; r++) {
  progress(`PGlite round ${r}/${ROUNDS}: store (group commit), ${N} entries`);
  liteStore = Math.max(liteStore, await storePath(undefined, N));
  progress(`PGlite round ${r}/${ROUNDS}: raw COPY from a Blob, ${N} rows`);
  liteCopy = Math.max(liteCopy, await copyPglite(N));
}
progress(`PGlite: per-row INSERT, ${NAIVE} rows`);
const liteNaive = await naivePglite(NAIVE);

process.stdout.write(
  [
    '| backend | path | entries/s | ratio |',
    '|---|---|---:|---:|',
    `| PostgreSQL | store: group commit, each caller answered after commit (best of ${ROUNDS}) | ${f(pgStore)} | ${(pgStore / pgCopy).toFixed(2)}× of COPY, ${(pgStore / pgNaive).toFixed(1)}× per-row |`,
    `| PostgreSQL | raw COPY (pg-copy-streams), no per-entry answer (best of ${ROUNDS}) | ${f(pgCopy)} | 1.00× |`,
    `| PostgreSQL | per-row INSERT, autocommit (naive) | ${f(pgNaive)} | ${(pgNaive / pgCopy).toFixed(3)}× of COPY |`,
    `| PGlite | store: group commit, each caller answered after commit (best of ${ROUNDS}) | ${f(liteStore)} | ${(liteStore / liteCopy).toFixed(2)}× of COPY, ${(liteStore / liteNaive).toFixed(1)}× per-row |`,
    `| PGlite | raw COPY from a Blob, no per-entry answer (best of ${ROUNDS}) | ${f(liteCopy)} | 1.00× |`,
    `| PGlite | per-row INSERT (naive) | ${f(liteNaive)} | ${(liteNaive / liteCopy).toFixed(3)}× of COPY |`,
  ].join('\n') + '\n',
);
