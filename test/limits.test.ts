/**
 * Every quantity a client can grow has a limit, and each limit answers with
 * its documented error (docs/reliability.md#limits), through the real
 * sidecar: the cache's bytes (LRU eviction; a value over its per-entry share
 * is a `bad_request`), requests in flight on a Port connection
 * (`overloaded`, naming the setting), metadata entries and bytes
 * (`bad_request`). After each is grown past its limit, RSS stays within the
 * bound stated in the test. (Atoms: test/memory.test.ts; NATS in flight:
 * test/nats-deadline.test.ts.)
 */
import { describe, expect, it } from 'vitest';
import { encode } from '../src/codec/etf.js';
import { atom, record, tuple, type TermObject } from '../src/codec/terms.js';
import { frame } from '../src/transports/frameReader.js';
import { PortClient, type Reply } from './helpers/portClient.js';

const MiB = 1024 * 1024;

async function stats(c: PortClient): Promise<TermObject> {
  const r = await c.request('stats', record({}));
  if (!r.ok) throw new Error(r.message);
  return r.value as TermObject;
}

/** RSS once a burst has settled: the smallest of a few idle readings. */
async function settledRss(c: PortClient): Promise<number> {
  let best = Infinity;
  for (let i = 0; i < 8; i++) {
    await new Promise((r) => setTimeout(r, 200));
    best = Math.min(best, Number(((await stats(c)).memory as TermObject).rss));
  }
  return best;
}

async function warm(c: PortClient): Promise<void> {
  await c.ready;
  for (let i = 0; i < 200; i++) await c.request('echo', record({ warm: i }));
  await c.request('cache_stats', record({}));
}

/** `{:req, id, :cache_put, %{key, value}}` compressed: a small frame for a large value. */
function cachePutFrame(id: number, key: string, value: string): Buffer {
  return frame(encode(tuple(atom('req'), id, atom('cache_put'), record({ key, value })), { compressAbove: 64 }));
}

const log = (m: string): void => void process.stderr.write(`[limits] ${m}\n`);

describe('limits', () => {
  it('cache bytes: 64 values of ~1 MB into a 16 MiB cache stay within it (LRU out first); a value over 1/8 of it is a bad_request; RSS within 2x start + 3x the cache', async () => {
    const c = new PortClient({ env: { LOG_LEVEL: 'silent', PROMPT_ENGINE_CACHE_BYTES: String(16 * MiB) } });
    await warm(c);
    const start = await settledRss(c);
    const replies: Array<Promise<Reply>> = [];
    for (let i = 0; i < 64; i++) {
      const id = 1_000 + i;
      replies.push(c.awaitReply(id));
      c.sendRaw(cachePutFrame(id, `k${i}`, String.fromCharCode(97 + (i % 26)).repeat(500_000)));
    }
    for (const r of await Promise.all(replies)) expect(r).toMatchObject({ ok: true });
    const s = (await c.request('cache_stats', record({}))) as { ok: true; value: TermObject };
    log(`cache: ${JSON.stringify({ total_bytes: s.value.total_bytes, total_entries: s.value.total_entries, evictions: s.value.evictions })}`);
    expect(Number(s.value.total_bytes)).toBeLessThanOrEqual(16 * MiB);
    expect(s.value.max_bytes).toBe(16 * MiB);
    expect(Number(s.value.evictions)).toBeGreaterThan(40);
    // The most recent value is still there, the first long gone.
    expect(await c.request('cache_get', record({ key: 'k63' }))).toMatchObject({ ok: true, value: { found: true } });
    expect(await c.request('cache_get', record({ key: 'k0' }))).toMatchObject({ ok: true, value: { found: false } });
    // One value over its share (2 MiB here): refused, naming the field and the setting.
    const id = 5_000;
    const big = c.awaitReply(id);
    c.sendRaw(cachePutFrame(id, 'big', 'z'.repeat(3 * MiB)));
    const r = await big;
    expect(r).toMatchObject({ ok: false, reason: 'bad_request' });
    expect(!r.ok && r.message).toMatch(/^value: about \d+ bytes in memory, over the cache's limit of 2097152 bytes per entry \(1\/8 of PROMPT_ENGINE_CACHE_BYTES\)$/);
    const after = await settledRss(c);
    log(`cache: RSS start ${(start / MiB).toFixed(0)} MiB, after ${(after / MiB).toFixed(0)} MiB`);
    expect(after).toBeLessThan(2 * start + 3 * 16 * MiB);
    expect((await c.close()).code).toBe(0);
  }, 120_000);

  it('cache entries: 50 puts into a cache of 10 entries keep the last 10', async () => {
    const c = new PortClient({ env: { LOG_LEVEL: 'silent', PROMPT_ENGINE_CACHE_ENTRIES: '10' } });
    await c.ready;
    for (let i = 0; i < 50; i++) expect(await c.request('cache_put', record({ key: `e${i}`, value: i }))).toMatchObject({ ok: true });
    expect(await c.request('cache_stats', record({}))).toMatchObject({ ok: true, value: { total_entries: 10, max_entries: 10, evictions: 40 } });
    expect(await c.request('cache_get', record({ key: 'e49' }))).toMatchObject({ ok: true, value: { found: true, value: 49 } });
    expect((await c.close()).code).toBe(0);
  }, 60_000);

  it('cache bytes at the default: 10 frames of ~20 kB that inflate to 20 MB each, under distinct keys, are refused and leave RSS within 2x start + 64 MiB', async () => {
    const c = new PortClient({ env: { LOG_LEVEL: 'silent' } });
    await warm(c);
    const start = await settledRss(c);
    for (let i = 0; i < 10; i++) {
      const id = 100 + i;
      const reply = c.awaitReply(id);
      c.sendRaw(cachePutFrame(id, `bomb${i}`, 'q'.repeat(20_000_000)));
      expect(await reply).toMatchObject({ ok: false, reason: 'bad_request', message: expect.stringMatching(/^value: .*per entry/) });
    }
    expect(await c.request('cache_stats', record({}))).toMatchObject({ ok: true, value: { total_entries: 0 } });
    const after = await settledRss(c);
    log(`cache default: RSS start ${(start / MiB).toFixed(0)} MiB, after ${(after / MiB).toFixed(0)} MiB`);
    expect(after).toBeLessThan(2 * start + 64 * MiB);
    expect((await c.close()).code).toBe(0);
  }, 120_000);

  it('requests in flight on a Port connection: 20,000 pipelined against the default 10,000, the rest overloaded at once naming the setting; all answered; RSS within 2x start + 64 MiB', async () => {
    const c = new PortClient({ env: { LOG_LEVEL: 'silent' } });
    await warm(c);
    const start = await settledRss(c);
    const replies: Array<Promise<Reply>> = [];
    for (let i = 0; i < 20_000; i++) replies.push(c.request('echo', record({ delay_ms: 3_000, i })));
    const all = await Promise.all(replies);
    const overloaded = all.filter((r) => !r.ok && r.reason === 'overloaded');
    const ok = all.filter((r) => r.ok);
    log(`in flight: ${ok.length} ok, ${overloaded.length} overloaded`);
    expect(ok.length + overloaded.length).toBe(20_000);
    expect(ok.length).toBeGreaterThanOrEqual(10_000);
    expect(overloaded.length).toBeGreaterThan(0);
    expect(overloaded[0]).toEqual({ ok: false, reason: 'overloaded', message: '10000 requests already in flight on this connection (PROMPT_ENGINE_PORT_MAX_IN_FLIGHT); retry when some have answered' });
    const port = (await stats(c)).services as TermObject;
    expect(Number((port.port as TermObject).overloaded)).toBe(overloaded.length);
    const after = await settledRss(c);
    log(`in flight: RSS start ${(start / MiB).toFixed(0)} MiB, after ${(after / MiB).toFixed(0)} MiB`);
    expect(after).toBeLessThan(2 * start + 64 * MiB);
    expect((await c.close()).code).toBe(0);
  }, 120_000);

  it('a lower in-flight limit is honoured exactly (PROMPT_ENGINE_PORT_MAX_IN_FLIGHT=100)', async () => {
    const c = new PortClient({ env: { LOG_LEVEL: 'silent', PROMPT_ENGINE_PORT_MAX_IN_FLIGHT: '100' } });
    await c.ready;
    const slow = Array.from({ length: 150 }, (_, i) => c.request('echo', record({ delay_ms: 2_000, i })));
    const all = await Promise.all(slow);
    expect(all.filter((r) => r.ok)).toHaveLength(100);
    expect(all.filter((r) => !r.ok && r.reason === 'overloaded')).toHaveLength(50);
    expect(await c.request('echo', record({ after: true }))).toMatchObject({ ok: true }); // the slots came back
    expect((await c.close()).code).toBe(0);
  }, 60_000);

  it('metadata: more than 256 entries or 64 KiB is a bad_request naming it, before anything is stored', async () => {
    const c = new PortClient({ env: { LOG_LEVEL: 'silent', DATABASE_URL: '' } });
    await c.ready;
    const entry = (metadata: Record<string, string>): TermObject => record({ prompt_id: 'p', success: true, execution_time_ms: 1, metadata: record(metadata) });
    const many = Object.fromEntries(Array.from({ length: 257 }, (_, i) => [`k${i}`, 'v']));
    expect(await c.request('track_execution', entry(many))).toEqual({ ok: false, reason: 'bad_request', message: 'metadata: expected at most 256 entries' });
    const large = { prompt: 'x'.repeat(70 * 1024) };
    expect(await c.request('track_execution', entry(large))).toEqual({ ok: false, reason: 'bad_request', message: 'metadata: expected at most 65536 bytes in total' });
    // Nothing reached the store: validation refused them at the edge (whether the store was opened yet or not).
    const store = ((await stats(c)).services as TermObject).store as TermObject | undefined;
    if (store !== undefined) expect(store).toMatchObject({ rows: 0, batches: 0 });
    expect((await c.close()).code).toBe(0);
  }, 60_000);
});
