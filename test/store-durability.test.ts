/**
 * No acknowledged tracking entry is ever lost or duplicated: 50,000
 * concurrent writes through the real sidecar, a PostgreSQL outage in the
 * middle of a write load, and a kill -9 while the journal holds entries.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { record, type Term, type TermObject } from '../src/codec/terms.js';
import { freshDatabase, startPrivatePostgres, type PrivatePostgres, storeClient } from './helpers/pg.js';
import { PortClient } from './helpers/portClient.js';

async function rows(url: string, sql: string): Promise<Array<Record<string, unknown>>> {
  const c = storeClient(url);
  await c.connect();
  try {
    return (await c.query(sql)).rows;
  } finally {
    await c.end();
  }
}

const tmpDir = (): string => fs.mkdtempSync(path.join(os.tmpdir(), 'pe-durable-'));
const entry = (caller: number, n: number): TermObject =>
  record({ prompt_id: `caller-${caller}`, execution_time_ms: n, success: n % 2 === 0, metadata: { caller: String(caller), n: String(n) } as unknown as Term });

async function journalDepth(c: PortClient): Promise<number> {
  const r = await c.request('stats', record({}));
  if (!r.ok) throw new Error(r.message);
  const store = ((r.value as TermObject).services as TermObject).store as TermObject | undefined;
  return Number(store?.journal_depth ?? 0);
}

describe('durability through the sidecar', () => {
  it('acknowledges 50,000 concurrent track calls, each stored exactly once', async () => {
    const url = await freshDatabase('pe_50k');
    // 50,000 at once on one connection: over the Port's default in-flight limit (10,000, the Elixir client's own default), so raised here.
    const c = new PortClient({ env: { DATABASE_URL: url, PROMPT_ENGINE_DATA_DIR: tmpDir(), LOG_LEVEL: 'warn', PROMPT_ENGINE_PORT_MAX_IN_FLIGHT: '50000' } });
    await c.ready;
    const t0 = performance.now();
    const replies = await Promise.all(Array.from({ length: 50_000 }, (_, i) => c.request('track_execution', entry(i % 100, i))));
    const ms = performance.now() - t0;
    expect(replies.filter((r) => !r.ok)).toEqual([]);
    const acked = new Set(replies.map((r) => String(((r as { value: TermObject }).value).id)));
    expect(acked.size).toBe(50_000);
    const stored = await rows(url, 'SELECT id::text AS id, count(*) OVER (PARTITION BY id) AS n FROM prompt_executions');
    expect(stored).toHaveLength(50_000);
    expect(stored.every((r) => Number(r.n) === 1 && acked.has(String(r.id)))).toBe(true);
    const stats = await c.request('stats', record({}));
    const store = (((stats as { value: TermObject }).value.services as TermObject).store as TermObject);
    expect(Number(store.batches)).toBeLessThan(5_000); // coalesced: far fewer commits than rows
    process.stderr.write(`[store] 50,000 track calls through the Port in ${ms.toFixed(0)} ms; ${String(store.batches)} batches\n`);
    expect((await c.close()).code).toBe(0);
  }, 120_000);

  describe('with a PostgreSQL server of its own', () => {
    let server: PrivatePostgres;
    beforeAll(async () => {
      server = await startPrivatePostgres();
    });
    afterAll(() => server.destroy());

    it('loses and duplicates nothing across an outage under write load, and keeps per-caller order', async () => {
      const c = new PortClient({ env: { DATABASE_URL: server.url, PROMPT_ENGINE_DATA_DIR: tmpDir(), LOG_LEVEL: 'warn' } });
      await c.ready;
      const acked: string[] = [];
      let stop = false;
      let sawJournal = false;
      const callers = Array.from({ length: 8 }, async (_, caller) => {
        for (let n = 0; !stop; n++) {
          const r = await c.request('track_execution', entry(caller, n));
          if (!r.ok) throw new Error(`${r.reason}: ${r.message}`);
          acked.push(String((r.value as TermObject).id));
        }
      });
      await new Promise((r) => setTimeout(r, 800));
      server.stop();
      const duringOutageStart = acked.length;
      await new Promise((r) => setTimeout(r, 1500));
      sawJournal = (await journalDepth(c)) > 0;
      const duringOutage = acked.length - duringOutageStart;
      server.start();
      await new Promise((r) => setTimeout(r, 1000));
      stop = true;
      await Promise.all(callers);
      for (let i = 0; i < 100 && (await journalDepth(c)) > 0; i++) await new Promise((r) => setTimeout(r, 100));
      expect(await journalDepth(c)).toBe(0);
      expect(sawJournal).toBe(true);
      expect(duringOutage).toBeGreaterThan(0); // callers were answered while the database was down

      const stored = await rows(server.url, `SELECT id::text AS id, metadata->>'caller' AS caller, (metadata->>'n')::int AS n FROM prompt_executions ORDER BY seq`);
      const storedIds = stored.map((r) => String(r.id));
      expect(new Set(storedIds).size).toBe(storedIds.length); // no duplicates
      const storedSet = new Set(storedIds);
      expect(acked.filter((id) => !storedSet.has(id))).toEqual([]); // nothing acknowledged is lost
      for (let caller = 0; caller < 8; caller++) {
        const ns = stored.filter((r) => Number(r.caller) === caller).map((r) => Number(r.n));
        expect(ns).toEqual([...ns].sort((a, b) => a - b)); // in order per caller
      }
      expect((await c.close()).code).toBe(0);
    }, 60_000);

    it('replays the journal of a sidecar killed with -9 at the next start, within 2 s and with no request', async () => {
      const dataDir = tmpDir();
      server.stop();
      const first = new PortClient({ env: { DATABASE_URL: server.url, PROMPT_ENGINE_DATA_DIR: dataDir, LOG_LEVEL: 'warn' } });
      await first.ready;
      const ids: string[] = [];
      for (let i = 0; i < 200; i++) {
        const r = await first.request('track_execution', record({ prompt_id: 'journaled', execution_time_ms: i, success: true }));
        expect(r.ok).toBe(true);
        ids.push(String(((r as { value: TermObject }).value).id));
      }
      expect(await journalDepth(first)).toBe(200);
      first.kill('SIGKILL');
      await first.exited;
      server.start();
      const second = new PortClient({ env: { DATABASE_URL: server.url, PROMPT_ENGINE_DATA_DIR: dataDir, LOG_LEVEL: 'warn' } });
      await second.ready;
      // No request: the store starts with the sidecar and replays what the first one journaled.
      const t0 = Date.now();
      let stored: Array<Record<string, unknown>> = [];
      while (Date.now() - t0 < 2_000) {
        stored = await rows(server.url, `SELECT id::text AS id FROM prompt_executions WHERE prompt_id = 'journaled'`).catch(() => []); // tables appear with the migrations
        if (stored.length === ids.length) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(new Set(stored.map((r) => String(r.id)))).toEqual(new Set(ids));
      expect(Date.now() - t0).toBeLessThan(2_000);
      expect(await journalDepth(second)).toBe(0);
      expect((await second.close()).code).toBe(0);
    }, 60_000);
  });
});
