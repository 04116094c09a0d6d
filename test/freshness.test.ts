/**
 * How a sidecar follows the other sidecars' changes (experiments/freshness.ts),
 * on a real PostgreSQL with two stores on one database: notices of another
 * sidecar's counts arriving within a tenth of the staleness bound share one
 * refresh (a refresh reads every named experiment's variants: one per notice
 * was the largest cost of a pool under load), every experiment named is
 * refreshed, within the bound; a notice that what to serve moved (a
 * decision) is followed at once; notices that could not arrive (the
 * listening connection reopened, the database away when the sidecar started)
 * are caught up by a full refresh once it listens.
 */
import os from 'node:os';
import { afterAll, describe, expect, it } from 'vitest';
import { coalesceMs, Freshness, type RefreshRequest } from '../src/experiments/freshness.js';
import { experimentKey } from '../src/experiments/experiment.js';
import { loopNotice } from '../src/store/experimentRecords.js';
import { createLogger } from '../src/log.js';
import { TrackingStore } from '../src/store/trackingStore.js';
import { freshDatabase } from './helpers/pg.js';
import { doorTo } from './helpers/door.js';
import { until } from './helpers/poll.js';

const log = createLogger('silent');
const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function twoStores(): Promise<[TrackingStore, TrackingStore]> {
  const url = await freshDatabase('pe_freshness');
  const open = async (id: string): Promise<TrackingStore> => {
    const s = await TrackingStore.open({ databaseUrl: url, dataDir: `${os.tmpdir()}/pe-freshness-${process.pid}-${id}`, instanceId: id, log });
    cleanups.push(() => s.close());
    return s;
  };
  return [await open('writer'), await open('follower')];
}

describe('a sidecar following the others (PostgreSQL)', () => {
  it('derives its coalescing window from the bound: a tenth, at least 10 ms', () => {
    expect(coalesceMs(1_000)).toBe(100);
    expect(coalesceMs(250)).toBe(25);
    expect(coalesceMs(50)).toBe(10);
  });

  it("refreshes once for another sidecar's burst of notices, every experiment it named, within the bound", async () => {
    const [writer, follower] = await twoStores();
    const boundMs = 1_000;
    const refreshes: Array<{ at: number; what: RefreshRequest }> = [];
    const freshness = new Freshness(follower, log, boundMs, async (what) => void refreshes.push({ at: Date.now(), what }));
    await freshness.start();
    cleanups.push(() => freshness.close());
    const { channel } = writer.experiments.notice;
    // 40 notices, each naming one experiment, over about 40 ms: what another sidecar's batches of outcomes send under load.
    const names = Array.from({ length: 40 }, (_, i) => `burst-${i}`);
    const sentAt = Date.now();
    for (const name of names) {
      await writer.db.notify(channel, JSON.stringify({ s: 'writer', k: [[name, 'm']] }));
      await new Promise((r) => setTimeout(r, 1));
    }
    const spreadMs = Date.now() - sentAt;
    const wanted = names.map((n) => experimentKey(n, 'm'));
    const refreshed = (): Set<string> => new Set(refreshes.flatMap((r) => (r.what === 'all' ? wanted : [...r.what])));
    await until(() => wanted.every((k) => refreshed().has(k)), 10_000, 10);
    // A refresh per window the notices spanned, and one for a notice delivered late (a busy machine sends them slower
    // too); with a window of 10 ms, a refresh per 10 ms.
    expect(refreshes.length).toBeLessThanOrEqual(Math.ceil(spreadMs / coalesceMs(boundMs)) + 1);
    expect(refreshes.at(-1)!.at - sentAt).toBeLessThan(spreadMs + boundMs);
    expect(freshness.figures.notices).toBe(names.length);
  });

  it('follows a notice that what to serve moved at once, taking along the counts that wait', async () => {
    const [writer, follower] = await twoStores();
    // A bound of 5 s: counts wait up to 500 ms for their refresh, a decision 10 ms.
    const refreshes: Array<{ at: number; what: RefreshRequest }> = [];
    const freshness = new Freshness(follower, log, 5_000, async (what) => void refreshes.push({ at: Date.now(), what }));
    await freshness.start();
    cleanups.push(() => freshness.close());
    const { channel } = writer.experiments.notice;
    await writer.db.notify(channel, JSON.stringify({ s: 'writer', k: [['counted', 'm']] }));
    const sentAt = Date.now();
    await writer.db.notify(channel, loopNotice('writer', [{ name: 'decided', model: 'm' }]));
    await until(() => refreshes.length > 0, 10_000, 5);
    expect(refreshes[0]!.what === 'all' ? 'all' : [...refreshes[0]!.what].sort()).toEqual([experimentKey('counted', 'm'), experimentKey('decided', 'm')].sort());
    expect(refreshes[0]!.at - sentAt).toBeLessThan(coalesceMs(5_000) * 0.8);
  });

  it('refreshes everything once it listens again: a notice sent while its listening connection reopened is not lost', async () => {
    const [writer, follower] = await twoStores();
    // A bound of 20 s: the heartbeats alone would see nothing missing within this test.
    const refreshes: RefreshRequest[] = [];
    const freshness = new Freshness(follower, log, 20_000, async (what) => void refreshes.push(what));
    await freshness.start();
    cleanups.push(() => freshness.close());
    const listener = async (): Promise<number | undefined> =>
      (await writer.db.query(`SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'`))[0]?.pid as number | undefined;
    const pid = await listener();
    expect(pid).toBeDefined();
    await writer.db.query('SELECT pg_terminate_backend($1)', [pid!]);
    await until(async () => (await listener()) !== pid, 10_000, 10);
    // Sent while nobody listens for the follower (it reopens its connection a second after losing it).
    await writer.db.notify(writer.experiments.notice.channel, loopNotice('writer', [{ name: 'while-away', model: 'm' }]));
    await until(() => refreshes.some((r) => r === 'all' || r.has(experimentKey('while-away', 'm'))), 10_000, 10);
    expect(freshness.figures.heartbeats_missed).toBe(0);
  });

  it('keeps trying to listen when the database was away at start, and catches up once it listens', async () => {
    const url = await freshDatabase('pe_freshness');
    // A real PostgreSQL behind a door: closed at first (every connection dropped), then open.
    const door = await doorTo(url);
    cleanups.push(() => door.stop());
    const writer = await TrackingStore.open({ databaseUrl: url, dataDir: `${os.tmpdir()}/pe-freshness-${process.pid}-away-writer`, instanceId: 'writer', log });
    cleanups.push(() => writer.close());
    const follower = await TrackingStore.open({ databaseUrl: door.url, dataDir: `${os.tmpdir()}/pe-freshness-${process.pid}-away`, instanceId: 'follower', log });
    cleanups.push(() => follower.close());
    const refreshes: RefreshRequest[] = [];
    const freshness = new Freshness(follower, log, 20_000, async (what) => void refreshes.push(what));
    cleanups.push(() => freshness.close());
    await expect(freshness.start()).rejects.toThrow();
    door.open();
    // Listening at last: everything loaded is refreshed once, and notices are followed from then on.
    await until(() => refreshes.includes('all'), 15_000, 10);
    await writer.db.notify(writer.experiments.notice.channel, loopNotice('writer', [{ name: 'after-start', model: 'm' }]));
    await until(() => refreshes.some((r) => r !== 'all' && r.has(experimentKey('after-start', 'm'))), 10_000, 10);
  });
});
