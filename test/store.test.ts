/**
 * The tracking store on both backends (PGlite and a real PostgreSQL): every
 * track op and query kind, idempotent ids, validation naming the field, and
 * the same results from both.
 */
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { COUNTED_COLUMNS, MIGRATIONS } from '../src/store/migrations.js';
import { TOTALS_KEYS } from '../src/store/experimentRecords.js';
import { ErlFloat, record, type Term, type TermObject } from '../src/codec/terms.js';
import { localEngine, type LocalEngine } from './helpers/engine.js';
import { freshDatabase, storeClient } from './helpers/pg.js';
import { okValue } from './helpers/results.js';
import { doorTo, type Door } from './helpers/door.js';
import { until } from './helpers/poll.js';
import { TrackingStore } from '../src/store/trackingStore.js';
import { entryRow, type EntryRow } from '../src/store/entries.js';
import { writeBatch, type StoreWrite } from '../src/store/groupCommitWriter.js';
import { POOL_ANSWER_MS, unanswered, unreachable, type Lease, type SqlClient } from '../src/store/db.js';
import { createLogger } from '../src/log.js';

const results: Record<string, unknown> = {};
/** How a piece of work on the store ended: 'answered', or the reason it failed with. */
const reason = (p: Promise<unknown>): Promise<string | undefined> => p.then(() => 'answered', (err: unknown) => (err as { reason?: string }).reason);
const ok = okValue;
const plain = (t: unknown): unknown => JSON.parse(JSON.stringify(t, (_k, v: unknown) => (v instanceof ErlFloat ? v.value : typeof v === 'bigint' ? String(v) : v)));
const ids = {
  e1: '11111111-1111-4111-8111-111111111111',
  f1: '22222222-2222-4222-8222-222222222222',
  v1: '33333333-3333-4333-8333-333333333333',
  ab: '44444444-4444-4444-8444-444444444444',
  cs: '55555555-5555-4555-8555-555555555555',
};

describe.each(['pglite', 'postgres'])('tracking store on %s', (backend) => {
  let pe: LocalEngine;
  let dbUrl: string | undefined;

  beforeAll(async () => {
    dbUrl = backend === 'postgres' ? await freshDatabase('pe_store') : undefined;
    pe = localEngine({ databaseUrl: dbUrl });
  });
  afterAll(async () => {
    await pe.close();
  });

  /** `fn` with a store of its own (schema `pe_<name>_<pid>`) reaching the test PostgreSQL through an open door; closed after. */
  async function behindDoor<T>(name: string, fn: (store: TrackingStore, door: Door) => Promise<T>, opts: { poolAnswerMs?: number } = {}): Promise<T> {
    const door = await doorTo(dbUrl!, { open: true });
    const store = await TrackingStore.open({ databaseUrl: door.url, dataDir: `${pe.dataDir}/${name}`, schema: `pe_${name}_${process.pid}`, log: createLogger('silent'), ...opts });
    try {
      return await fn(store, door);
    } finally {
      // A frozen door's connections end, so the store closes at once.
      door.close();
      door.open();
      await store.close();
      await door.stop();
    }
  }

  it('tracks each entry type and answers with its id', async () => {
    const at = Date.parse('2026-11-20T10:00:00Z');
    for (let i = 0; i < 30; i++) {
      const r = ok(
        await pe.call(
          'track_execution',
          record({
            ...(i === 0 ? { id: ids.e1 } : {}),
            prompt_id: i % 3 === 0 ? 'p_fast' : 'p_slow',
            execution_time_ms: i % 3 === 0 ? 100 + i : 1000 + i * 10,
            success: i % 3 === 0 ? true : i % 2 === 0,
            confidence_score: new ErlFloat(0.5 + (i % 5) / 10),
            context_signature: 'sig-a',
            response_length: 500,
            timestamp: new Date(at + i * 60_000).toISOString(),
            metadata: { model: 'm1', task: 't' } as unknown as Term,
          }),
        ),
      );
      expect(typeof r.id).toBe('string');
    }
    expect(ok(await pe.call('track_feedback', record({ id: ids.f1, prompt_id: 'p_fast', feedback_type: 'quality', rating: 4, comment: 'good', user_id: 'u1', context: { lang: 'elixir' } as unknown as Term }))).id).toBe(ids.f1);
    ok(await pe.call('track_feedback', record({ prompt_id: 'p_slow', feedback_type: 'accuracy', rating: 2, timestamp: '2020-01-01T00:00:00Z' })));
    ok(await pe.call('track_evolution', record({ id: ids.v1, original_prompt_id: 'p_slow', evolved_prompt_id: 'p_fast', evolution_type: 'optimization', performance_improvement: new ErlFloat(0.25), evolution_metadata: { proposer: 'offline' } as unknown as Term })));
    ok(await pe.call('track_ab_result', record({ id: ids.ab, test_id: 'ab1', variant_a_prompt_id: 'p_fast', variant_b_prompt_id: 'p_slow', winner: 'a', confidence_level: new ErlFloat(0.95), sample_size: 200, test_duration: 3_600_000, metrics: { lift: new ErlFloat(0.1) } as unknown as Term })));
    ok(await pe.call('track_context_signature', record({ id: ids.cs, signature_hash: 'sig-a', project_tech_stack: ['Elixir', 'phoenix', 'postgres'], project_type: 'web', complexity_level: 'medium' })));
    ok(await pe.call('track_context_signature', record({ signature_hash: 'sig-b', project_tech_stack: ['rust', 'tokio'], project_type: 'cli', complexity_level: 'low' })));
    ok(await pe.call('track_context_signature', record({ signature_hash: 'sig-c', project_tech_stack: ['elixir', 'nerves'], project_type: 'embedded', complexity_level: 'high' })));
  });

  it('stores an id written twice once', async () => {
    const entry = record({ id: ids.e1, prompt_id: 'p_fast', execution_time_ms: 1, success: false });
    expect(ok(await pe.call('track_execution', entry)).id).toBe(ids.e1);
    const rows = ok(await pe.call('query', record({ kind: 'by_id', id: ids.e1 }))).rows as TermObject[];
    expect(rows).toHaveLength(1);
    expect(rows[0]!.execution_time_ms).toBe(100); // the first write stands
  });

  it('rejects bad entries naming the field, and writes nothing', async () => {
    const before = (ok(await pe.call('prompt_stats', record({ prompt_id: 'p_bad' }))).prompts as TermObject[])[0]!.count;
    const cases: Array<[string, TermObject, RegExp]> = [
      ['track_execution', record({ execution_time_ms: 1, success: true }), /^prompt_id: is required/],
      ['track_execution', record({ prompt_id: 'p_bad', execution_time_ms: 'slow', success: true }), /^execution_time_ms: expected an integer/],
      ['track_execution', record({ prompt_id: 'p_bad', execution_time_ms: 1, success: true, timestamp: 'yesterday' }), /^timestamp: expected an ISO-8601/],
      ['track_execution', record({ prompt_id: 'p_bad', execution_time_ms: 1, success: true, metadata: { big: 'x'.repeat(70_000) } as unknown as Term }), /^metadata: expected at most/],
      ['track_execution', record({ prompt_id: 'p_bad', execution_time_ms: 1, success: true, id: 'not-a-uuid' }), /^id: expected a UUID/],
      ['track_feedback', record({ prompt_id: 'p_bad', feedback_type: 'vibes', rating: 1 }), /^feedback_type: expected one of quality/],
      ['track_ab_result', record({ test_id: 't', variant_a_prompt_id: 'a', variant_b_prompt_id: 'b', winner: 'c', confidence_level: 0.5, sample_size: 1, test_duration: 1 }), /^winner: expected one of a, b, tie/],
      ['track_ab_result', record({ test_id: 't', variant_a_prompt_id: 'a', variant_b_prompt_id: 'b', winner: 'a', confidence_level: 0.5, sample_size: 1, test_duration: 1, metrics: { x: 'high' } as unknown as Term }), /^metrics\.x: expected a number/],
      ['track_evolution', record({ original_prompt_id: 'a', evolved_prompt_id: 'b', evolution_type: 'optimization' }), /^performance_improvement: is required/],
      // What the counting trigger could not hold: a cost whose square overflows, a name no experiment can have.
      ['track_execution', record({ prompt_id: 'p_bad', execution_time_ms: 1, success: true, cost: new ErlFloat(1e200), metadata: { experiment: 'x', generation: '1' } as unknown as Term }), /^cost: expected a number in 0\.\.1000000000/],
      ['track_execution', record({ prompt_id: 'p_bad', execution_time_ms: 1, success: true, metadata: { experiment: 'e'.repeat(3_000), generation: '1' } as unknown as Term }), /^metadata\.experiment: expected at most 200 characters/],
      ['track_execution', record({ prompt_id: 'p_bad', execution_time_ms: 1, success: true, metadata: { experiment: 'x', model: 'm'.repeat(201) } as unknown as Term }), /^metadata\.model: expected at most 200 characters/],
      ['track_feedback', record({ prompt_id: 'p_bad', feedback_type: 'quality', rating: 1, context: { experiment: 'e'.repeat(3_000) } as unknown as Term }), /^context\.experiment: expected at most 200 characters/],
    ];
    for (const [op, entry, msg] of cases) {
      const r = await pe.call(op, entry);
      expect(r.ok, `${op} ${JSON.stringify(plain(entry))}`).toBe(false);
      expect(r).toMatchObject({ reason: 'bad_request' });
      expect((r as { message: string }).message).toMatch(msg);
    }
    expect((ok(await pe.call('prompt_stats', record({ prompt_id: 'p_bad' }))).prompts as TermObject[])[0]!.count).toBe(before);
  });

  it('answers the seven query kinds and per-prompt aggregates', async () => {
    const q = async (args: Record<string, Term>) => ok(await pe.call('query', record(args))).rows as TermObject[];
    const out: Record<string, unknown> = {};
    out.by_id = plain(await q({ kind: 'by_id', id: ids.f1 }));
    out.similar = (await q({ kind: 'similar', project_tech_stack: ['elixir', 'postgres'], project_type: 'web' })).map((r) => [r.signature_hash, r.overlap]);
    out.by_tech_stack = (await q({ kind: 'by_tech_stack', project_tech_stack: ['elixir'] })).map((r) => r.signature_hash).sort();
    out.prompt_executions = (await q({ kind: 'prompt_executions', prompt_id: 'p_fast', limit: 3 })).map((r) => r.execution_time_ms);
    out.recent_feedback = (await q({ kind: 'recent_feedback', duration: '24h' })).map((r) => r.prompt_id);
    out.evolution_history = plain((await q({ kind: 'evolution_history', prompt_id: 'p_fast' })).map((r) => [r.original_prompt_id, r.evolved_prompt_id, r.performance_improvement, r.evolution_metadata]));
    out.high_performance = plain(await q({ kind: 'high_performance', threshold: new ErlFloat(0.9), min_count: 5 }));
    const stats = ok(await pe.call('prompt_stats', record({ prompt_ids: ['p_fast', 'p_slow', 'p_none'] }))).prompts as TermObject[];
    out.stats = plain(stats);

    expect(out.similar).toEqual([
      ['sig-a', 2],
      ['sig-c', 1],
    ]);
    expect(out.by_tech_stack).toEqual(['sig-a', 'sig-c']);
    expect(out.prompt_executions).toEqual([127, 124, 121]);
    expect(out.recent_feedback).toEqual(['p_fast']); // the 2020 one is older than 24h
    expect(out.evolution_history).toEqual([['p_slow', 'p_fast', 0.25, { proposer: 'offline' }]]);
    expect(out.high_performance).toEqual([{ prompt_id: 'p_fast', count: 10, successes: 10, success_rate: 1, mean_confidence: expect.any(Number), p50_ms: 113.5, p95_ms: expect.any(Number) }]);
    const [fast, slow, none] = stats;
    expect(fast).toMatchObject({ prompt_id: 'p_fast', count: 10, successes: 10 });
    expect(fast!.success_rate).toBeInstanceOf(ErlFloat);
    expect(slow).toMatchObject({ prompt_id: 'p_slow', count: 20, successes: 10 });
    expect((slow!.success_rate as ErlFloat).value).toBe(0.5);
    expect(none).toMatchObject({ count: 0 });
    const byId = (out.by_id as Array<Record<string, unknown>>)[0]!;
    expect(byId).toMatchObject({ kind: 'feedback', prompt_id: 'p_fast', feedback_type: 'quality', rating: 4, comment: 'good', context: { lang: 'elixir' } });
    results[backend] = out;
  });

  it('rejects bad queries naming the field', async () => {
    expect(await pe.call('query', record({ kind: 'nope' }))).toMatchObject({ ok: false, reason: 'bad_request', message: expect.stringMatching(/^kind: expected one of by_id/) });
    for (const id of ['-'.repeat(36), 'a'.repeat(36)]) expect(await pe.call('query', record({ kind: 'by_id', id }))).toMatchObject({ ok: false, reason: 'bad_request', message: expect.stringMatching(/^id: /) });
    expect(await pe.call('query', record({ kind: 'recent_feedback', duration: 'soon' }))).toMatchObject({ ok: false, message: expect.stringMatching(/^duration:/) });
    // a window whose start is no date: bad_request naming the field, not an internal error
    expect(await pe.call('query', record({ kind: 'recent_feedback', duration: '99999999999d' }))).toMatchObject({ ok: false, reason: 'bad_request', message: 'duration: expected a window of at most 100 years' });
    expect(await pe.call('query', record({ kind: 'recent_feedback', since_ms: 9e15 }))).toMatchObject({ ok: false, reason: 'bad_request', message: expect.stringMatching(/^since_ms: /) });
    expect(await pe.call('query', record({ kind: 'recent_feedback', duration: '36500d' }))).toMatchObject({ ok: true });
    expect(await pe.call('query', record({ kind: 'prompt_executions' }))).toMatchObject({ ok: false, message: 'prompt_id: is required (a string)' });
  });

  it('keeps one query reply within 16 MiB of row text: past it, bad_request naming how many rows fit, which then answer', async () => {
    // 300 executions of about 60 KB each (metadata's limit is 64 KiB): 18 MB, more than one reply carries.
    const blob = 'x'.repeat(60_000);
    await Promise.all(
      Array.from({ length: 300 }, (_, i) =>
        pe.call('track_execution', record({ prompt_id: 'p_big', execution_time_ms: i, success: true, timestamp: new Date(Date.parse('2026-11-21T00:00:00Z') + i * 1000).toISOString(), metadata: { blob } as unknown as Term })),
      ),
    ).then((rs) => rs.forEach(ok));
    const refused = await pe.call('query', record({ kind: 'prompt_executions', prompt_id: 'p_big', limit: 1000 }));
    expect(refused).toMatchObject({ ok: false, reason: 'bad_request', message: expect.stringMatching(/^limit: the first \d+ rows of this query hold more than 16777216 bytes, the most one reply carries: ask for at most \d+, or narrow the query$/) });
    const fit = Number(/ask for at most (\d+)/.exec((refused as { message: string }).message)![1]);
    // About 16 MiB / 60 KB rows fit: not a handful, not all 300.
    expect(fit).toBeGreaterThan(250);
    expect(fit).toBeLessThan(300);
    const rows = ok(await pe.call('query', record({ kind: 'prompt_executions', prompt_id: 'p_big', limit: fit }))).rows as TermObject[];
    expect(rows).toHaveLength(fit);
    // The newest first, as without the budget, and no column of the budget's own in the rows.
    expect(rows.slice(0, 3).map((r) => r.execution_time_ms)).toEqual([299, 298, 297]);
    expect(Object.keys(rows[0]!).filter((k) => k.startsWith('pe_'))).toEqual([]);
    expect(await pe.call('query', record({ kind: 'prompt_executions', prompt_id: 'p_big', limit: fit + 1 }))).toMatchObject({ ok: false, reason: 'bad_request' });
  }, 120_000);

  it('applies migrations once, also when two stores open the same database', async () => {
    if (dbUrl === undefined) return; // one PGlite directory belongs to one process
    const { TrackingStore } = await import('../src/store/trackingStore.js');
    const { createLogger } = await import('../src/log.js');
    const log = createLogger('silent');
    const [a, b] = await Promise.all([TrackingStore.open({ databaseUrl: dbUrl, dataDir: pe.dataDir + '/a', log }), TrackingStore.open({ databaseUrl: dbUrl, dataDir: pe.dataDir + '/b', log })]);
    const c = storeClient(dbUrl);
    await c.connect();
    const rows = (await c.query('SELECT version FROM schema_migrations ORDER BY version')).rows;
    await c.end();
    expect(rows.map((r: { version: number }) => r.version)).toEqual(MIGRATIONS.map((m) => m.version));
    await a.close();
    await b.close();
  });

  it('writes a large batch in one go (COPY on PostgreSQL): awkward text round-trips, an id already stored keeps its first write', async () => {
    const awkward = 'tab\there\nnew line\\back\\slash\r and \\N, ünïcödé 🚀';
    const calls = Array.from({ length: 200 }, (_, i) =>
      pe.call(
        'track_execution',
        record({
          ...(i === 7 ? { id: ids.e1 } : {}),
          prompt_id: `p_copy_${i % 4}`,
          execution_time_ms: 5 + i,
          success: i % 2 === 0,
          ...(i % 5 === 0 ? {} : { confidence_score: new ErlFloat(0.125) }),
          context_signature: i % 3 === 0 ? awkward : 'sig-copy',
          metadata: { model: 'm-copy', note: awkward, n: i } as unknown as Term,
        }),
      ),
    );
    const written = (await Promise.all(calls)).map((r) => ok(r).id as string);
    expect(written[7]).toBe(ids.e1);
    const first = ok(await pe.call('query', record({ kind: 'by_id', id: ids.e1 }))).rows as TermObject[];
    expect(first).toHaveLength(1);
    expect(first[0]!.execution_time_ms).toBe(100); // still the first write: the duplicate was skipped, the batch not lost
    const row = (ok(await pe.call('query', record({ kind: 'by_id', id: written[3]! }))).rows as TermObject[])[0]!;
    expect(row.context_signature).toBe(awkward);
    expect(row.confidence_score).toBeInstanceOf(ErlFloat);
    expect(((row.metadata as TermObject).note as string)).toBe(awkward);
    const noScore = (ok(await pe.call('query', record({ kind: 'by_id', id: written[5]! }))).rows as TermObject[])[0]!;
    expect(noScore.execution_time_ms).toBe(10);
    const ofPrompt = ok(await pe.call('query', record({ kind: 'prompt_executions', prompt_id: 'p_copy_1', limit: 100 }))).rows as TermObject[];
    expect(ofPrompt).toHaveLength(50);
  });

  it('shares a burst of writes evenly among the connections free to write (3 on PostgreSQL, 1 on PGlite)', async () => {
    const store = await TrackingStore.open({ databaseUrl: dbUrl, dataDir: `${pe.dataDir}/burst`, log: createLogger('silent') });
    try {
      const before = store.figures.batches as number;
      // 900 writes in one tick: three batches of 300 at once on PostgreSQL (not 500 and 400, which
      // leaves a connection idle), 500 then 400 on PGlite's single connection.
      await Promise.all(Array.from({ length: 900 }, (_, i) => store.track('execution', record({ prompt_id: `p_burst_${i % 3}`, execution_time_ms: i, success: true }))));
      expect((store.figures.batches as number) - before).toBe(backend === 'postgres' ? 3 : 2);
      expect(store.figures.rows).toBeGreaterThanOrEqual(900);
    } finally {
      await store.close();
    }
  });

  it('keeps nothing per batch while the writer is never idle (a window of writes always waiting)', async () => {
    const store = await TrackingStore.open({ databaseUrl: dbUrl, dataDir: `${pe.dataDir}/sustained`, log: createLogger('silent') });
    const writer = (store as unknown as { writer: { idle: unknown[] } }).writer;
    try {
      const before = store.figures.batches as number;
      let next = 0;
      let mostWaiting = 0;
      // 64 writers each writing again as soon as its write is answered (1,500 writes): the queue is never empty until the end.
      const lane = async (): Promise<void> => {
        while (next < 1_500) {
          await store.track('execution', record({ prompt_id: `p_sustained_${next++ % 5}`, execution_time_ms: 1, success: true }));
          mostWaiting = Math.max(mostWaiting, writer.idle.length);
        }
      };
      await Promise.all(Array.from({ length: 64 }, lane));
      expect((store.figures.batches as number) - before).toBeGreaterThan(20);
      // One waiter: the flush that the first write started (before, one more for every batch committed while others waited).
      expect(mostWaiting).toBeLessThanOrEqual(1);
      expect(writer.idle).toHaveLength(0);
    } finally {
      await store.close();
    }
  });

  it('survives a connection that drops while it is in use (held for the training lock, or mid-statement)', async () => {
    if (dbUrl === undefined) return;
    const door = await doorTo(dbUrl, { open: true });
    const store = await TrackingStore.open({ databaseUrl: door.url, dataDir: `${pe.dataDir}/dropped`, schema: `pe_dropped_${process.pid}`, log: createLogger('silent') });
    const errors: unknown[] = [];
    const onError = (err: unknown): void => void errors.push(err);
    process.on('uncaughtException', onError);
    try {
      // The lock's connection is taken from the pool and held while the work runs; the network drops meanwhile.
      const held = await store.withTrainingLock(async () => {
        door.close();
        await new Promise((r) => setTimeout(r, 300));
        return 'trained';
      });
      expect(held).toEqual({ locked: true, value: 'trained' });
      // A statement in flight when its connection drops fails as the database away, nothing else.
      door.open();
      const slow = store.db.query('SELECT pg_sleep(5)');
      await new Promise((r) => setTimeout(r, 500));
      door.close();
      await expect(slow).rejects.toMatchObject({ reason: 'unavailable' });
      await new Promise((r) => setTimeout(r, 300));
      expect(errors).toEqual([]);
    } finally {
      process.off('uncaughtException', onError);
      door.open();
      await store.close();
      await door.stop();
    }
  }, 60_000);

  it('holds the training lock as a lease: when its connection drops another instance trains, and the first one can no longer promote', async () => {
    if (dbUrl === undefined) return; // PGlite: one process, one trainer
    const door = await doorTo(dbUrl, { open: true });
    const schema = `pe_trainlease_${process.pid}`;
    const first = await TrackingStore.open({ databaseUrl: door.url, dataDir: `${pe.dataDir}/trainlease1`, schema, log: createLogger('silent') });
    const second = await TrackingStore.open({ databaseUrl: dbUrl, dataDir: `${pe.dataDir}/trainlease2`, schema, log: createLogger('silent') });
    try {
      await first.models.save({ version: 'v-first', feature_spec_hash: 'h', samples: 1, metrics: {}, onnx: new Uint8Array([1]), meta: {} });
      const outcome = await first.withTrainingLock(async (hold) => {
        // While the first trains, the second is told so.
        expect(await second.withTrainingLock(async () => 'trained too')).toEqual({ locked: false });
        // The first's connections drop (its network), while the first instance lives on.
        door.close();
        await until(() => hold.signal.aborted, 10_000);
        // The lock dies with its connection (once the server has seen it go): another instance trains now.
        let taken: { locked: boolean } = { locked: false };
        await until(async () => (taken = await second.withTrainingLock(async () => 'trained instead')).locked, 20_000, 100);
        expect(taken).toEqual({ locked: true, value: 'trained instead' });
        door.open();
        // The first's promotion, made after it lost the lease, is refused and promotes nothing.
        return first.models.promote('v-first', hold.lease).then(
          () => 'promoted',
          (err: unknown) => (err as { reason?: string }).reason,
        );
      });
      expect(outcome).toEqual({ locked: true, value: 'unavailable' });
      expect(await second.models.promoted()).toBeUndefined();
    } finally {
      door.open();
      await first.close();
      await second.close();
      await door.stop();
    }
  }, 60_000);

  it('announces a promotion that committed even when its trainer was told it failed (cut at its COMMIT)', async () => {
    if (dbUrl === undefined) return; // PGlite: one instance, nobody to tell
    await behindDoor('cutpromote', async (store) => {
      await store.models.save({ version: 'v-cut', feature_spec_hash: 'h', samples: 1, metrics: {}, onnx: new Uint8Array([1]), meta: {} });
      const heard: Array<string | undefined> = [];
      const stop = await store.models.onPromoted((v) => void heard.push(v));
      try {
        // A lease whose transaction commits, then loses its answer (the pool's time limit past).
        const cutLease: Lease = {
          held: true,
          transaction: async (fn) => {
            await store.db.transaction(fn);
            throw unreachable(unanswered(POOL_ANSWER_MS));
          },
          onLost: () => undefined,
          release: async () => undefined,
        };
        await expect(store.models.promote('v-cut', cutLease)).rejects.toMatchObject({ reason: 'unavailable' });
        expect(await store.models.promotedVersions()).toEqual(['v-cut']);
        // Before, the NOTIFY came after the transaction, and never went out: every other instance kept the old model.
        await until(() => heard.includes('v-cut'), 5_000, 20);
      } finally {
        await stop();
      }
    });
  }, 60_000);

  it('gives the training lease up when its connection goes silent (no reset: a partition), so that training stops and cannot promote', async () => {
    if (dbUrl === undefined) return;
    await behindDoor('silentlease', async (store, door) => {
      const outcome = await store.withTrainingLock(async (hold) => {
        door.freeze();
        // The keep-alive goes unanswered: the lease is lost within its check's time limit, not when TCP gives up.
        await until(() => hold.signal.aborted, 20_000, 100);
        expect(hold.signal.reason).toMatchObject({ reason: 'unavailable' });
        // Refused at once: the pooled connections are behind the same silence.
        return store.models.promote('v-silent', hold.lease).then(
          () => 'promoted',
          (err: unknown) => (err as { reason?: string }).reason,
        );
      });
      expect(outcome).toEqual({ locked: true, value: 'unavailable' });
    });
  }, 60_000);

  it('journals the tracking writes a silent database does not answer (no reset: a partition), and stores each once when it is back', async () => {
    if (dbUrl === undefined) return; // a server behind a door
    await behindDoor('silentwrite', async (store, door) => {
      const first = await store.track('execution', record({ prompt_id: 'p_silent', execution_time_ms: 1, success: true }));
      // Each pooled connection has the server probe it: a session cut this side ends there, with its locks, within seconds.
      expect(await store.db.query('SHOW tcp_keepalives_idle')).toEqual([{ tcp_keepalives_idle: '5' }]);
      door.freeze();
      // Before, these waited on the frozen pooled connection for as long as the partition lasted.
      const writes = Promise.all(Array.from({ length: 5 }, (_, i) => store.track('execution', record({ prompt_id: 'p_silent', execution_time_ms: i, success: true }))));
      const answered = await Promise.race([writes, new Promise<'still waiting'>((r) => setTimeout(() => r('still waiting'), 30_000))]);
      expect(answered).not.toBe('still waiting');
      expect(store.figures).toMatchObject({ journal_depth: 5, db_up: false });
      // The network back (the frozen connections end): the journal goes in, each write once.
      door.close();
      door.open();
      await until(() => store.figures.journal_depth === 0, 30_000);
      const stored = (await store.db.query(`SELECT id::text AS id FROM prompt_executions WHERE prompt_id = 'p_silent'`)).map((r) => String(r.id)).sort();
      expect(stored).toEqual([first, ...(answered as string[])].sort());
    });
  }, 90_000);

  it('cuts a statement, a NOTIFY or a transaction a silent database does not answer within its limit, so that the pool serves again once the database does', async () => {
    if (dbUrl === undefined) return; // a server behind a door
    await behindDoor(
      'silentread',
      async (store, door) => {
        // The pool's six connections open, then silent.
        await Promise.all(Array.from({ length: 6 }, () => store.db.query('SELECT pg_sleep(0.2)')));
        door.freeze();
        // Statements, NOTIFYs (the closed loop's heartbeat sends one a few times a second) and transactions (the
        // loop's decisions, an operator's action), one on each frozen connection.
        const work = [() => store.db.query('SELECT 1'), () => store.db.notify('pe_silent', 'hb'), () => store.db.transaction((q) => q('SELECT 1'))];
        const stuck = Promise.all(Array.from({ length: 6 }, (_, i) => reason(work[i % 3]!())));
        // The database answers again at the same address; the frozen connections stay silent (their host gone).
        door.open();
        // Before, they waited until TCP gave up (a quarter of an hour), with the pool full.
        const answered = await Promise.race([stuck, new Promise<'still waiting'>((r) => setTimeout(() => r('still waiting'), 20_000))]);
        expect(answered).toEqual(Array(6).fill('unavailable'));
        expect(await store.db.query('SELECT 1 AS one')).toEqual([{ one: 1 }]);
        await store.track('execution', record({ prompt_id: 'p_silent_read', execution_time_ms: 1, success: true }));
        expect(store.figures).toMatchObject({ journal_depth: 0, db_up: true });
      },
      { poolAnswerMs: 3_000 },
    );
  }, 60_000);

  it('ends on the server a statement whose connection was cut at its limit (a lock wait does not run on), and runs a session given a longer limit past the pool\'s', async () => {
    if (dbUrl === undefined) return; // a server whose sessions we can watch
    await behindDoor(
      'cutwait',
      async (store) => {
        const admin = new pg.Client({ connectionString: dbUrl });
        const watcher = new pg.Client({ connectionString: dbUrl });
        await Promise.all([admin.connect(), watcher.connect()]);
        try {
          await store.db.query('CREATE TABLE held (id int)');
          await admin.query('BEGIN');
          await admin.query(`LOCK TABLE ${store.db.schema}.held`);
          expect(await reason(store.db.query('SELECT count(*) /* pe_cut_wait */ FROM held'))).toBe('unavailable');
          // Before, its backend went on waiting for the lock (holding what it held) as long as the lock was held.
          // (Read outside the lock's transaction: inside one, pg_stat_activity's states stay as first read.)
          const waiting = async (): Promise<number> => Number((await watcher.query(`SELECT count(*) AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%pe_cut_wait */%' AND pid <> pg_backend_pid()`)).rows[0].n);
          await until(async () => (await waiting()) === 0, 10_000);
          await admin.query('ROLLBACK');
          // Longer than the pool's limit (1.5 s, so 2.5 s on the server) when a session says so: a statement, a transaction.
          expect(await store.db.query('SELECT 1 AS slept FROM pg_sleep(3)', [], { timeoutMs: 8_000 })).toEqual([{ slept: 1 }]);
          await store.db.transaction((q) => q('SELECT pg_sleep(3)'), { timeoutMs: 8_000 });
          // Each connection went back to the pool with the pool's limit: six at once are all of them.
          let release!: () => void;
          const held = new Promise<void>((r) => (release = r));
          let shown = 0;
          const limits = Promise.all(
            Array.from({ length: 6 }, () =>
              store.db.transaction(async (q) => {
                const [row] = await q('SHOW statement_timeout');
                if (++shown === 6) release();
                await held;
                return String(row!.statement_timeout);
              }),
            ),
          );
          expect(await limits).toEqual(Array(6).fill('2500ms'));
          expect(await reason(store.db.query('SELECT pg_sleep(3)'))).toBe('unavailable');
        } finally {
          await Promise.all([admin.end(), watcher.end()]);
        }
      },
      { poolAnswerMs: 1_500 },
    );
  }, 60_000);

  it('keeps journaled writes while the database refuses them for now (read-only after a failover), and stores them once it takes them', async () => {
    if (dbUrl === undefined) return; // a server to make read-only
    const url = await freshDatabase('pe_readonly');
    const dbName = new URL(url).pathname.slice(1);
    const door = await doorTo(url, { open: true });
    const store = await TrackingStore.open({ databaseUrl: door.url, dataDir: `${pe.dataDir}/readonly`, log: createLogger('silent') });
    const admin = storeClient(url);
    await admin.connect();
    try {
      // The database away: the writes are acknowledged from the journal.
      door.close();
      const ids = await Promise.all(Array.from({ length: 20 }, (_, i) => store.track('execution', record({ prompt_id: `p_ro_${i % 2}`, execution_time_ms: i, success: true }))));
      expect(store.figures.journal_depth).toBe(20);
      // It answers again, read-only (a standby before its promotion): every insert is refused with 25006, for a while.
      await admin.query(`ALTER DATABASE ${dbName} SET default_transaction_read_only = on`);
      door.open();
      const attempts = async (): Promise<number> => Number((await admin.query(`SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, [dbName])).rows[0].n);
      await until(async () => (await attempts()) > 0, 10_000);
      // Several replays tried (the writer retries every 300 ms), none may drop what it acknowledged.
      await new Promise((r) => setTimeout(r, 1_500));
      expect(store.figures).toMatchObject({ journal_depth: 20, refused: 0 });
      // Promoted: writable again (its sessions too), and the journal goes in.
      await admin.query(`ALTER DATABASE ${dbName} RESET default_transaction_read_only`);
      await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [dbName]);
      await until(() => store.figures.journal_depth === 0, 30_000);
      const stored = (await admin.query('SELECT id::text AS id FROM prompt_engine.prompt_executions')).rows.map((r: { id: string }) => r.id).sort();
      expect(stored).toEqual([...ids].sort());
      expect(store.figures.refused).toBe(0);
    } finally {
      await admin.end();
      await store.close();
      await door.stop();
    }
  }, 60_000);

  it('writes history snapshots in the statement that stores a batch: each once (replayed too), the outcomes counted once, a snapshot alone apart', async () => {
    const store = await pe.engine.service('store');
    const [e1, f1] = [randomUUID(), randomUUID()];
    const outcome = (id: string, success: boolean): EntryRow =>
      entryRow('execution', { id, prompt_id: 'p_a', execution_time_ms: 5, success, timestamp: new Date().toISOString(), metadata: { experiment: 'hist', model: 'm', generation: '1' } });
    const snapshot = (id: string, outcomes: number): StoreWrite => ({ kind: 'history', id, history: { row: { name: 'hist', model: 'm', generation: 1 }, h: { kind: 'snapshot', prompt_id: null, outcomes, successes: 1, variants: { p_a: outcomes } } } });
    // The real client, with each session's statements counted: a batch of outcomes and a snapshot is one statement, no transaction.
    const sessions: Array<{ inTransaction: boolean; statements: number }> = [];
    const counted: SqlClient = {
      ...store.db,
      session: (inTransaction, fn) => {
        const s = { inTransaction, statements: 0 };
        sessions.push(s);
        return store.db.session(inTransaction, (q, copy) => fn((...a) => (s.statements++, q(...a)), copy));
      },
    };
    const [h1, h2, h3] = [randomUUID(), randomUUID(), randomUUID()];
    const first = await writeBatch(counted, [outcome(e1, true), snapshot(h1, 2), outcome(f1, false)]);
    expect([first.get(e1)?.status, first.get(f1)?.status]).toEqual(['stored', 'stored']);
    expect(sessions).toEqual([{ inTransaction: false, statements: 1 }]);
    // The same outcome again, with the next snapshot: the outcome is a duplicate, the snapshot is stored.
    const again = await writeBatch(store.db, [outcome(e1, true), snapshot(h2, 3)]);
    expect(again.get(e1)?.status).toBe('duplicate');
    await writeBatch(store.db, [snapshot(h3, 4)]);
    // Replayed from the journal again (the process stopped after the commit, before the journal was cleared):
    // the snapshots are stored once, alongside outcomes or alone, as the outcomes are.
    await writeBatch(store.db, [outcome(e1, true), snapshot(h1, 2), outcome(f1, false)]);
    await writeBatch(store.db, [snapshot(h3, 4)]);
    const history = await store.db.query(`SELECT outcomes, variants FROM experiment_history WHERE name = 'hist' ORDER BY seq`);
    expect(history.map((r) => Number(r.outcomes))).toEqual([2, 3, 4]);
    expect(history[0]!.variants).toEqual({ p_a: 2 });
    const counts = await store.db.query(`SELECT successes, count FROM experiment_counts WHERE name = 'hist'`);
    expect(counts.map((r) => [Number(r.successes), Number(r.count)])).toEqual([[1, 2]]);
  });
});

describe('both backends', () => {
  it('give the same results for the same history', () => {
    expect(results.pglite).toBeDefined();
    const strip = (o: unknown) => JSON.parse(JSON.stringify(o, (k, v: unknown) => (k === 'timestamp' || k === 'mean_confidence' ? undefined : v)));
    expect(strip(results.postgres)).toEqual(strip(results.pglite));
  });
});

describe('PGlite data directory', () => {
  it('refuses a second process on the same directory with a clear unavailable error', async () => {
    const { PortClient } = await import('./helpers/portClient.js');
    const fs = await import('node:fs');
    const os = await import('node:os');
    const path = await import('node:path');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-lock-'));
    const env = { PROMPT_ENGINE_DATA_DIR: dir, DATABASE_URL: '', LOG_LEVEL: 'silent' };
    const a = new PortClient({ env });
    const b = new PortClient({ env });
    await Promise.all([a.ready, b.ready]);
    const entry = record({ prompt_id: 'lock', execution_time_ms: 1, success: true });
    // Each opens its store at start: exactly one of them holds the directory.
    const [ra, rb] = await Promise.all([a.request('track_execution', entry), b.request('track_execution', entry)]);
    expect([ra.ok, rb.ok].sort()).toEqual([false, true]);
    const [owner, other, refused] = ra.ok ? [a, b, rb] : [b, a, ra];
    expect(refused).toMatchObject({ ok: false, reason: 'unavailable' });
    expect((refused as { message: string }).message).toMatch(/in use by process \d+/);
    await owner.close();
    // the lock goes with its owner: now the other sidecar can open it
    expect((await other.request('track_execution', entry)).ok).toBe(true);
    await other.close();
  }, 60_000);
});

describe('the store in its own schema, beside an app\'s tables (PostgreSQL)', () => {
  it('leaves an app\'s Ecto schema_migrations and its tables named models, experiments, executions untouched', async () => {
    const url = await freshDatabase('pe_beside_ecto');
    const app = new pg.Client({ connectionString: url });
    await app.connect();
    // What an Ecto app's database looks like: its migrations table and tables with generic names.
    await app.query(`CREATE TABLE schema_migrations (version bigint PRIMARY KEY, inserted_at timestamp(0))`);
    await app.query(`INSERT INTO schema_migrations VALUES (20240101000000, now())`);
    await app.query(`CREATE TABLE models (id bigserial PRIMARY KEY, name text)`);
    await app.query(`CREATE TABLE experiments (id bigserial PRIMARY KEY, title text)`);
    await app.query(`CREATE TABLE executions (id bigserial PRIMARY KEY, started_at timestamp)`);
    await app.query(`INSERT INTO models (name) VALUES ('app row')`);
    const before = (await app.query(`SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2`)).rows;

    const pe = localEngine({ databaseUrl: url });
    expect(await pe.call('track_execution', record({ prompt_id: 'p-ecto', success: true, execution_time_ms: 3 }))).toMatchObject({ ok: true });
    const c = await pe.call('choose_prompt', record({ experiment: 'beside_ecto', prompt: 'Sort {x}.' }));
    expect(c).toMatchObject({ ok: true });
    await pe.close();

    expect((await app.query(`SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2`)).rows).toEqual(before);
    expect((await app.query(`SELECT version FROM schema_migrations`)).rows).toEqual([{ version: '20240101000000' }]);
    expect((await app.query(`SELECT name FROM models`)).rows).toEqual([{ name: 'app row' }]);
    const ours = (await app.query(`SELECT table_name FROM information_schema.tables WHERE table_schema = 'prompt_engine' ORDER BY 1`)).rows.map((r: { table_name: string }) => r.table_name);
    expect(ours).toEqual(expect.arrayContaining(['schema_migrations', 'prompt_executions', 'models', 'experiments', 'experiment_variants', 'experiment_counts']));
    expect((await app.query(`SELECT count(*)::int AS n FROM prompt_engine.prompt_executions`)).rows[0].n).toBe(1);
    await app.end();
  });

  it('moves an installation written before the schema existed (tables in public) into it, with nothing lost', async () => {
    const url = await freshDatabase('pe_move_public');
    const old = new pg.Client({ connectionString: url });
    await old.connect();
    // The store as earlier versions left it: every table and the migrations' bookkeeping in public.
    await old.query(`CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    for (const m of MIGRATIONS.filter((x) => x.version <= 4)) {
      for (const stmt of m.sql.split(/;\s*\n/).map((x) => x.trim()).filter((x) => x.length > 0)) await old.query(stmt);
      await old.query(`INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, [m.version, m.name]);
    }
    await old.query(`INSERT INTO prompt_executions (id, prompt_id, execution_time_ms, success, "timestamp", metadata) VALUES ('6f1c1a52-3c53-4c8e-9e43-2f8b2b8f0a11', 'p-old', 5, true, now(), '{"experiment":"old_exp","model":"m","generation":"1"}')`);
    await old.query(`INSERT INTO experiments (name, model, generation, base_prompt_id) VALUES ('old_exp', 'm', 1, 'p-old')`);
    await old.query(`INSERT INTO experiment_variants (name, model, generation, prompt_id, text, origin, prior_alpha, prior_beta) VALUES ('old_exp', 'm', 1, 'p-old', 'Old base {x}.', 'base', 1, 1)`);
    await old.end();

    const pe = localEngine({ databaseUrl: url });
    const rows = ok(await pe.call('query', record({ kind: 'prompt_executions', prompt_id: 'p-old' }))).rows as TermObject[];
    expect(rows.length).toBe(1);
    const exp = (ok(await pe.call('experiment', record({ experiment: 'old_exp' }))).experiments as TermObject[])[0]!;
    expect(exp).toMatchObject({ outcomes: 1, generation: 1 });
    await pe.close();
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    const left = (await c.query(`SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'`)).rows;
    expect(left).toEqual([]);
    expect((await c.query(`SELECT version FROM prompt_engine.schema_migrations ORDER BY 1`)).rows.map((r: { version: number }) => r.version)).toEqual(MIGRATIONS.map((m) => m.version));
    await c.end();
  });
});

describe('group commit under load (PostgreSQL)', () => {
  it('while a batch commits, the next waits for 128 writes or for it to return (fewer, larger batches under load)', async () => {
    const dbUrl = await freshDatabase('pe_group_commit');
    const store = await TrackingStore.open({ databaseUrl: dbUrl, dataDir: `${os.tmpdir()}/pe-group-commit-${process.pid}`, log: createLogger('silent') });
    // The table held in SHARE mode: every batch that starts waits on the lock, where pg_stat_activity shows it.
    const holder = new pg.Client({ connectionString: dbUrl });
    const watcher = new pg.Client({ connectionString: dbUrl });
    await Promise.all([holder.connect(), watcher.connect()]);
    const waiting = async (): Promise<number> =>
      Number((await watcher.query(`SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend' AND wait_event_type = 'Lock' AND query ILIKE '%prompt_executions%'`)).rows[0].n);
    const track = (n: number, tag: string): Array<Promise<unknown>> =>
      Array.from({ length: n }, (_, i) => store.track('execution', record({ prompt_id: `p_held_${tag}`, execution_time_ms: i, success: true })));
    try {
      await holder.query('BEGIN');
      await holder.query(`LOCK TABLE "${store.db.schema}".prompt_executions IN SHARE MODE`);
      const before = store.figures.batches as number;
      const writes = track(1, 'a');
      await vi.waitFor(async () => expect(await waiting()).toBe(1), { timeout: 10_000, interval: 20 });
      // 100 wait: two connections are free, but no batch starts beside it for fewer than 128.
      writes.push(...track(100, 'b'));
      await new Promise((r) => setTimeout(r, 300));
      expect(await waiting()).toBe(1);
      // The 128th starts them at once, as one batch (before: they waited for the first to return, then went as three).
      writes.push(...track(28, 'c'));
      await vi.waitFor(async () => expect(await waiting()).toBe(2), { timeout: 10_000, interval: 20 });
      await holder.query('COMMIT');
      await Promise.all(writes);
      expect((store.figures.batches as number) - before).toBe(2);
      // Nothing committing: a lone write does not wait for 127 more.
      await Promise.all(track(1, 'd'));
      expect((store.figures.batches as number) - before).toBe(3);
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      await Promise.all([holder.end(), watcher.end()]);
      await store.close();
    }
  });
});

describe('closed-loop counting in the statement that stores an outcome (PostgreSQL)', () => {
  it('the counting triggers answer every aggregate the store reads', () => {
    expect([...COUNTED_COLUMNS].sort()).toEqual([...TOTALS_KEYS].sort());
  });

  it('counts each new outcome once per variant, announces the experiments a batch moved, and says "all" past the NOTIFY limit', async () => {
    const url = await freshDatabase('pe_counting');
    const store = await TrackingStore.open({ databaseUrl: url, dataDir: `${os.tmpdir()}/pe-counting-${process.pid}`, instanceId: 'writer', log: createLogger('silent') });
    const heard: Array<{ s: string; k?: Array<[string, string]>; all?: boolean }> = [];
    const stop = await store.db.listen(store.experiments.notice.channel, (p) => heard.push(JSON.parse(p) as (typeof heard)[number]));
    try {
      const outcome = (experiment: string, success: boolean, id?: string): Promise<string> =>
        store.track('execution', record({ ...(id === undefined ? {} : { id }), prompt_id: 'p_a', execution_time_ms: 7, success, metadata: { experiment, model: 'm', generation: '1' } as unknown as Term }));
      // Two experiments, a repeated id: counted once.
      await Promise.all([outcome('small-1', true, ids.e1), outcome('small-1', false), outcome('small-2', true)]);
      await outcome('small-1', true, ids.e1);
      // 400 experiments in one tick: batches whose keys do not fit in 7,000 bytes.
      await Promise.all(Array.from({ length: 400 }, (_, i) => outcome(`a-rather-long-experiment-name-past-the-notify-limit-${String(i).padStart(4, '0')}`, i % 2 === 0)));
      const counts = (await store.db.query(`SELECT name, successes, count, scored, latency_sum FROM experiment_counts ORDER BY name`)).map((r) => [r.name, Number(r.successes), Number(r.count), Number(r.scored), Number(r.latency_sum)]);
      expect(counts.length).toBe(402);
      expect(counts.filter((c) => String(c[0]).startsWith('small'))).toEqual([['small-1', 1, 2, 2, 14], ['small-2', 1, 1, 1, 7]]);
      expect(counts.filter((c) => String(c[0]).startsWith('a-rather')).every((c, i) => c[1] === (i % 2 === 0 ? 1 : 0) && c[2] === 1)).toBe(true);
      await expect.poll(() => heard.some((n) => n.all === true), { timeout: 10_000 }).toBe(true);
      const small = heard.filter((n) => n.k?.some(([name]) => name.startsWith('small')));
      expect([...new Set(small.flatMap((n) => n.k ?? []).map(([name, model]) => `${name}/${model}`))].sort()).toEqual(['small-1/m', 'small-2/m']);
      expect(heard.every((n) => n.s === 'writer')).toBe(true);
    } finally {
      await stop();
      await store.close();
    }
  });
});
