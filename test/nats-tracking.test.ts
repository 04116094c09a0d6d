/**
 * Durable tracking through JetStream with two real sidecars on one
 * PostgreSQL database (its own, on TEST_DATABASE_URL's server) and a
 * nats-server this file owns: track_execution requests are answered once
 * the stream has the entry; one sidecar is killed with SIGKILL mid-load;
 * clients retry some entries with the same id. Afterwards every
 * acknowledged entry is in the store exactly once.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { nanos, type NatsConnection } from 'nats';
import { NatsSidecar, OwnNatsServer, natsConnect, requestEtf, requestJson, requireEnv, sleep } from './helpers/nats.js';
import { record, float, Tuple, type TermObject } from '../src/codec/terms.js';
import { createDatabase } from './helpers/pg.js';
import { until } from './helpers/poll.js';
import { redeliveryDelayMs } from '../src/transports/natsTracking.js';

const BASE_DB = requireEnv('TEST_DATABASE_URL');
const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

async function ownDatabase(): Promise<string> {
  const db = await createDatabase(BASE_DB, 'pe_nats');
  cleanups.push(db.drop);
  return db.url;
}

const entry = (i: number, id?: string): Record<string, unknown> => ({
  ...(id !== undefined ? { id } : {}),
  prompt_id: `nats-prompt-${i % 7}`,
  execution_time_ms: 100 + i,
  success: i % 3 !== 0,
  confidence_score: 0.5,
  context_signature: 'sig-nats',
  response_length: 40,
  timestamp: new Date().toISOString(),
  metadata: { n: String(i) },
});

/** The id a track_* reply carries (`{"ok": {"id": ...}}` or `{"ok": "..."}`). */
function idOf(body: unknown): string | undefined {
  const ok = (body as { ok?: unknown }).ok;
  if (typeof ok === 'string') return ok;
  if (ok !== null && typeof ok === 'object' && typeof (ok as { id?: unknown }).id === 'string') return (ok as { id: string }).id;
  return undefined;
}

async function jsPending(nc: NatsConnection): Promise<number> {
  const jsm = await nc.jetstreamManager();
  const ci = await jsm.consumers.info('PROMPT_ENGINE_TRACK', 'prompt_engine_track');
  return ci.num_pending + ci.num_ack_pending;
}

/** A nats-server of its own with one sidecar on it (default settings); a client connection to it. All stopped after the file. */
async function oneSidecar(): Promise<NatsConnection> {
  const server = await OwnNatsServer.start();
  cleanups.push(() => server.stop());
  const sc = new NatsSidecar({ natsUrl: server.url });
  cleanups.push(() => sc.kill());
  await sc.ready();
  const nc = await natsConnect(server.url);
  cleanups.push(() => nc.close());
  return nc;
}

describe('durable tracking through JetStream', () => {
  it('no acknowledged entry is lost or duplicated when a sidecar is killed with SIGKILL mid-load and clients retry', async () => {
    const server = await OwnNatsServer.start();
    cleanups.push(() => server.stop());
    const dbUrl = await ownDatabase();
    const env = { DATABASE_URL: dbUrl, PROMPT_ENGINE_TRACK_ACK_WAIT_MS: '1500' };
    const a = new NatsSidecar({ natsUrl: server.url, env });
    const b = new NatsSidecar({ natsUrl: server.url, env });
    cleanups.push(() => a.kill(), () => b.kill());
    await Promise.all([a.ready(), b.ready()]);
    const nc = await natsConnect(server.url);
    cleanups.push(() => nc.close());

    const acked = new Map<string, Record<string, unknown>>();
    let failed = 0;
    let i = 0;
    const t0 = Date.now();
    let killed = false;
    const workers = Array.from({ length: 12 }, async () => {
      while (Date.now() - t0 < 3000) {
        if (!killed && Date.now() - t0 > 1200) {
          killed = true;
          a.proc.kill('SIGKILL');
        }
        const n = i++;
        const e = entry(n, n % 2 === 0 ? randomUUID() : undefined);
        try {
          const r = await requestJson(nc, 'track_execution', e, 3000);
          const id = idOf(r.body);
          if (id === undefined) throw new Error(`no id in ${JSON.stringify(r.body)}`);
          if (e.id !== undefined) expect(id).toBe(e.id);
          acked.set(id, { ...e, id });
        } catch (err) {
          if (err instanceof Error && err.message.startsWith('no id')) throw err;
          failed++;
        }
      }
    });
    await Promise.all(workers);
    await a.exited;
    expect(acked.size).toBeGreaterThan(100);

    // Clients retry some acknowledged entries with the same id (a lost reply, say): JSON and ETF.
    const retries = [...acked.values()].slice(0, 20);
    for (const [k, e] of retries.entries()) {
      if (k % 2 === 0) expect(idOf((await requestJson(nc, 'track_execution', e)).body)).toBe(e.id);
      else {
        const { term } = await requestEtf(nc, 'track_execution', record({ ...(e as Record<string, never>), confidence_score: float(0.5), metadata: record({}) }) as TermObject);
        expect((term as Tuple).items[0]).toMatchObject({ name: 'ok' });
      }
    }

    // The consumer drains (entries A held unacked are redelivered to B after the ack wait).
    const until = Date.now() + 20_000;
    while (Date.now() < until && (await jsPending(nc)) > 0) await sleep(200);
    expect(await jsPending(nc)).toBe(0);

    const db = new pg.Client({ connectionString: dbUrl });
    await db.connect();
    cleanups.push(() => db.end());
    // The engine's tables live in their own schema (PROMPT_ENGINE_DB_SCHEMA, prompt_engine by default).
    const rows = (await db.query<{ id: string; n: string }>(`SELECT id::text AS id, count(*)::text AS n FROM prompt_engine.prompt_executions GROUP BY id`)).rows;
    const counts = new Map(rows.map((r) => [r.id, Number(r.n)]));
    const missing = [...acked.keys()].filter((id) => !counts.has(id));
    const duplicated = rows.filter((r) => Number(r.n) > 1);
    expect(missing).toEqual([]);
    expect(duplicated).toEqual([]);
    // Nothing beyond what was sent (entries whose reply was lost with A may be stored: they were sent).
    expect(rows.length).toBeLessThanOrEqual(acked.size + failed);

    // B did the writing through the stream.
    const stats = (await requestJson(nc, 'stats', {})).body as { ok: { services: { nats?: { jetstream?: Record<string, number> } } } };
    const js = stats.ok.services.nats?.jetstream;
    process.stderr.write(`tracking via JetStream: acked ${acked.size}, failed ${failed}, rows ${rows.length}, B figures ${JSON.stringify(js)}\n`);
    expect(js?.written).toBeGreaterThan(0);
    // The 20 retries reached the stream with ids it already had: dropped there by Nats-Msg-Id.
    expect(js?.duplicates).toBe(20);
  });
});

describe('a tracking write that fails for now', () => {
  it('is handed out again after a delay that doubles with each delivery, from 1 s to at most 60 s', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8, 100].map(redeliveryDelayMs)).toEqual([1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]);
    // A count JetStream never sends (0) is the first delivery's delay, not less.
    expect(redeliveryDelayMs(0)).toBe(1_000);
  });
});

describe('tracking without JetStream', () => {
  it('goes straight to the store: answered with the id once the row is durable', async () => {
    const server = await OwnNatsServer.start(['--no-js']);
    cleanups.push(() => server.stop());
    const sc = new NatsSidecar({ natsUrl: server.url });
    cleanups.push(() => sc.kill());
    await sc.ready();
    expect(sc.stderr).toContain('JetStream not available');
    const nc = await natsConnect(server.url);
    cleanups.push(() => nc.close());
    const ping = JSON.parse(Buffer.from((await nc.request('$SRV.INFO.prompt_engine', new Uint8Array(), { timeout: 3000 })).data).toString()) as { metadata: Record<string, string> };
    expect(ping.metadata.durable_tracking).toBe('direct');
    const id = randomUUID();
    expect((await requestJson(nc, 'track_execution', entry(1, id))).body).toEqual({ ok: { id } });
    const q = (await requestJson(nc, 'query', { kind: 'by_id', id })).body as { ok: { rows: Array<{ id: string; prompt_id: string }> } };
    expect(q.ok.rows.map((r) => r.id)).toEqual([id]);
  });

  it('goes straight to the store when its stream cannot be made (another stream already takes its subjects)', async () => {
    const server = await OwnNatsServer.start();
    cleanups.push(() => server.stop());
    const nc = await natsConnect(server.url);
    cleanups.push(() => nc.close());
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({ name: 'SOMEONE_ELSES', subjects: ['prompt_engine.track.>'] });
    const sc = new NatsSidecar({ natsUrl: server.url });
    cleanups.push(() => sc.kill());
    await sc.ready();
    expect(sc.stderr).toContain('JetStream tracking stream not set up');
    const ping = JSON.parse(Buffer.from((await nc.request('$SRV.INFO.prompt_engine', new Uint8Array(), { timeout: 3000 })).data).toString()) as { metadata: Record<string, string> };
    expect(ping.metadata.durable_tracking).toBe('direct');
    const id = randomUUID();
    expect((await requestJson(nc, 'track_execution', entry(2, id))).body).toEqual({ ok: { id } });
    expect(((await requestJson(nc, 'query', { kind: 'by_id', id })).body as { ok: { rows: Array<{ id: string }> } }).ok.rows.map((r) => r.id)).toEqual([id]);
  });

  it('answers a track within a short deadline when its stream does not ack: the direct write gets the deadline\'s second half', async () => {
    const nc = await oneSidecar();
    // The stream is gone and cannot be made again (another stream takes part of its subjects); a subscriber
    // that never answers takes the publishes, so JetStream's ack never comes (no "no responders" either).
    // The sidecar makes its stream again when it finds it gone, which can come between the delete and the add:
    // delete again until the other stream is in.
    const jsm = await nc.jetstreamManager();
    await until(async () => {
      await jsm.streams.delete('PROMPT_ENGINE_TRACK').catch(() => false);
      return jsm.streams.add({ name: 'SOMEONE_ELSES', subjects: ['prompt_engine.track.feedback'] }).then(() => true, () => false);
    }, 20_000, 20);
    nc.subscribe('prompt_engine.track.execution');
    const id = randomUUID();
    // Before, the publish waited its own 5 s, and the caller's 2 s deadline passed first: `timeout`.
    expect((await requestJson(nc, 'track_execution', { ...entry(3, id), timeout_ms: 2_000 })).body).toEqual({ ok: { id } });
    expect(((await requestJson(nc, 'query', { kind: 'by_id', id })).body as { ok: { rows: Array<{ id: string }> } }).ok.rows.map((r) => r.id)).toEqual([id]);
  }, 60_000);

  it('makes its consumer again when it is deleted, and writes what waited in the stream', async () => {
    const nc = await oneSidecar();
    const stored = async (id: string): Promise<boolean> => ((await requestJson(nc, 'query', { kind: 'by_id', id })).body as { ok: { rows: unknown[] } }).ok.rows.length === 1;
    const first = randomUUID();
    expect(idOf((await requestJson(nc, 'track_execution', entry(1, first))).body)).toBe(first);
    await until(() => stored(first), 20_000, 50);
    // An operator removes the consumer (nats consumer rm): the entries published meanwhile wait in the stream.
    await (await nc.jetstreamManager()).consumers.delete('PROMPT_ENGINE_TRACK', 'prompt_engine_track');
    const second = randomUUID();
    expect(idOf((await requestJson(nc, 'track_execution', entry(2, second))).body)).toBe(second);
    await until(() => stored(second), 30_000, 50);
  }, 60_000);

  it('gives an entry published straight to the stream without its time the time the stream took it, not when it is written', async () => {
    const server = await OwnNatsServer.start();
    cleanups.push(() => server.stop());
    const first = new NatsSidecar({ natsUrl: server.url });
    await first.ready(); // makes the stream and its consumer
    await first.kill();
    const nc = await natsConnect(server.url);
    cleanups.push(() => nc.close());
    const id = randomUUID();
    const { timestamp: _none, ...untimed } = entry(3, id);
    const publishedAt = Date.now();
    await nc.jetstream().publish('prompt_engine.track.execution', JSON.stringify(untimed), { msgID: id });
    // Written only later, by a sidecar that starts a few seconds after.
    await sleep(3_000);
    const sc = new NatsSidecar({ natsUrl: server.url });
    cleanups.push(() => sc.kill());
    await sc.ready();
    let rows: Array<{ timestamp: string }> = [];
    await until(async () => (rows = ((await requestJson(nc, 'query', { kind: 'by_id', id })).body as { ok: { rows: typeof rows } }).ok.rows).length === 1, 30_000, 50);
    expect(Math.abs(Date.parse(rows[0]!.timestamp) - publishedAt)).toBeLessThan(1_500);
  }, 60_000);

  it('takes a changed ack wait at its next start: the consumer an earlier start made is updated', async () => {
    const server = await OwnNatsServer.start();
    cleanups.push(() => server.stop());
    const first = new NatsSidecar({ natsUrl: server.url });
    await first.ready();
    await first.kill();
    const nc = await natsConnect(server.url);
    cleanups.push(() => nc.close());
    const jsm = await nc.jetstreamManager();
    const ackWait = async (): Promise<number | undefined> => (await jsm.consumers.info('PROMPT_ENGINE_TRACK', 'prompt_engine_track')).config.ack_wait;
    expect(await ackWait()).toBe(nanos(10_000));
    const second = new NatsSidecar({ natsUrl: server.url, env: { PROMPT_ENGINE_TRACK_ACK_WAIT_MS: '60000' } });
    cleanups.push(() => second.kill());
    await second.ready();
    expect(await ackWait()).toBe(nanos(60_000));
  }, 60_000);
});
