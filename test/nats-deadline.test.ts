/**
 * NATS peer mode honours a caller's deadline (header Prompt-Engine-Timeout-Ms,
 * or timeout_ms in a JSON body, else a default): work whose caller gave up is
 * cancelled and its slot freed, so abandoned requests cannot starve the
 * others. Real nats-server, real sidecar process.
 */
import { headers } from 'nats';
import { afterAll, describe, expect, it } from 'vitest';
import { NatsSidecar, OwnNatsServer, natsConnect, requestJson, sleep } from './helpers/nats.js';

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

describe('NATS deadlines', () => {
  it('after 5,000 abandoned requests, health is answered long before the 60 s they asked for, and nothing stays in flight', async () => {
    const server = await OwnNatsServer.start();
    cleanups.push(() => server.stop());
    const sc = new NatsSidecar({ natsUrl: server.url, env: { PROMPT_ENGINE_NATS_DEADLINE_MS: '60000' } });
    cleanups.push(() => sc.kill());
    await sc.ready();
    const nc = await natsConnect(server.url);
    cleanups.push(() => nc.close());

    // 5,000 slow requests whose callers give up: half name their deadline in the body, half in the header;
    // their reply subject has no subscriber (the caller is gone).
    const h = headers();
    h.set('Prompt-Engine-Timeout-Ms', '300');
    for (let i = 0; i < 5000; i++) {
      if (i % 2 === 0) nc.publish('prompt_engine.echo', JSON.stringify({ delay_ms: 60_000, timeout_ms: 300, i }), { reply: `gone.${i}` });
      else nc.publish('prompt_engine.echo', JSON.stringify({ delay_ms: 60_000, i }), { reply: `gone.${i}`, headers: h });
    }
    await nc.flush();
    // Their slots come back at their deadline (300 ms after the sidecar reads each), not after the 60 s
    // they asked for: health is answered ok (not `overloaded`) once the sidecar has read and expired them,
    // which on a busy 2-core machine takes a few seconds, not a fixed 600 ms.
    const t0 = Date.now();
    let health = (await requestJson(nc, 'health', {}, 5_000)).body as { ok?: { status: string }; error?: { reason: string } };
    while (health.ok === undefined && Date.now() - t0 < 20_000) {
      expect(health.error?.reason).toBe('overloaded');
      await sleep(100);
      health = (await requestJson(nc, 'health', {}, 5_000)).body as typeof health;
    }
    expect(health.ok?.status).toBe('ok');
    expect(Date.now() - t0).toBeLessThan(20_000);
    // Every abandoned request expires at its deadline and gives its slot back.
    type Stats = { ok: { services: { nats: { in_flight: number; expired: number } } } };
    let nats = ((await requestJson(nc, 'stats', {}, 5_000)).body as Stats).ok.services.nats;
    for (let i = 0; i < 200 && nats.in_flight > 1; i++) {
      await sleep(50);
      nats = ((await requestJson(nc, 'stats', {}, 5_000)).body as Stats).ok.services.nats;
    }
    expect(nats.in_flight).toBeLessThanOrEqual(1);
    expect(nats.expired).toBeGreaterThan(4000);

    // A caller still waiting gets a timeout error at its deadline, not silence; a bad deadline is a bad request.
    const late = (await requestJson(nc, 'echo', { delay_ms: 5_000, timeout_ms: 200 }, 3_000)).body as { error: { reason: string } };
    expect(late.error.reason).toBe('timeout');
    // The header in any case (header names are case-insensitive; Gnat sends them lower-case).
    const lower = headers();
    lower.set('prompt-engine-timeout-ms', '200');
    const lowerReply = await nc.request('prompt_engine.echo', JSON.stringify({ delay_ms: 5_000 }), { timeout: 3_000, headers: lower });
    expect((JSON.parse(lowerReply.string()) as { error: { reason: string } }).error.reason).toBe('timeout');
    const bad = (await requestJson(nc, 'echo', { timeout_ms: -1 })).body as { error: { reason: string; message: string } };
    expect(bad.error).toMatchObject({ reason: 'bad_request' });
    expect(bad.error.message).toMatch(/timeout_ms/);
  }, 60_000);
});

describe('the default NATS deadline', () => {
  it('5,000 abandoned requests that name no deadline hold their slots no longer than the default: overloaded at first, then ok, long before their own 60 s', async () => {
    // 1,000 slots (PROMPT_ENGINE_NATS_MAX_IN_FLIGHT) so that a busy machine still fills them before the first deadline passes.
    const server = await OwnNatsServer.start();
    cleanups.push(() => server.stop());
    const sc = new NatsSidecar({ natsUrl: server.url, env: { PROMPT_ENGINE_NATS_DEADLINE_MS: '', PROMPT_ENGINE_NATS_MAX_IN_FLIGHT: '1000' } }); // the default deadline
    cleanups.push(() => sc.kill());
    await sc.ready();
    const nc = await natsConnect(server.url);
    cleanups.push(() => nc.close());
    const t0 = Date.now();
    for (let i = 0; i < 5000; i++) nc.publish('prompt_engine.echo', JSON.stringify({ delay_ms: 60_000, i }), { reply: `gone.${i}` });
    await nc.flush();
    // Every slot is taken: a caller gets overloaded, naming the setting.
    type Reply = { ok?: { status: string }; error?: { reason: string; message: string } };
    // The test's own requests refused here (health, stats) are counted in the sidecar's `overloaded` too: the test keeps their number.
    let ownRefused = 0;
    const health = async (): Promise<Reply> => {
      const r = (await requestJson(nc, 'health', {}, 5_000)).body as Reply;
      if (r.error?.reason === 'overloaded') ownRefused++;
      return r;
    };
    let h = await health();
    for (let i = 0; i < 50 && h.error === undefined; i++) h = await health();
    expect(h.error).toMatchObject({ reason: 'overloaded' });
    expect(h.error!.message).toContain('PROMPT_ENGINE_NATS_MAX_IN_FLIGHT');
    // At the default deadline the abandoned work is cancelled and the slots come back.
    while (h.error !== undefined && Date.now() - t0 < 20_000) {
      await sleep(200);
      h = await health();
    }
    expect(h.ok?.status).toBe('ok');
    // The default deadline (5 s) plus a busy machine's slack, well short of the 30 s default there was before; the echoes would run 60 s.
    expect(Date.now() - t0).toBeLessThan(20_000);
    // Every abandoned request was refused (overloaded) or expired at the default deadline: none ran its 60 s.
    type Figures = { expired: number; overloaded: number; in_flight: number };
    type Stats = { ok?: { services: { nats: Figures } }; error?: { reason: string } };
    // A stats request refused (overloaded) is counted apart, like health's, and asked again.
    const stats = async (): Promise<Figures> => {
      for (;;) {
        const r = (await requestJson(nc, 'stats', {}, 5_000)).body as Stats;
        if (r.ok !== undefined) return r.ok.services.nats;
        if (r.error?.reason === 'overloaded') ownRefused++;
        else throw new Error(`stats: ${JSON.stringify(r)}`);
        await sleep(200);
      }
    };
    // On a busy machine the first deadlines can pass before the last echoes are read: an echo then takes the freed
    // slot and expires 5 s after the others. So wait until all 5,000 are accounted for, not merely for few in flight.
    const echoesAnswered = (n: Figures): number => n.expired + n.overloaded - ownRefused;
    let nats = await stats();
    while ((echoesAnswered(nats) < 5000 || nats.in_flight > 1) && Date.now() - t0 < 40_000) {
      await sleep(200);
      nats = await stats();
    }
    expect(nats.in_flight).toBeLessThanOrEqual(1);
    expect(nats.expired).toBeGreaterThanOrEqual(1000);
    expect(echoesAnswered(nats)).toBe(5000);
  }, 90_000);
});

describe('NATS start-up', () => {
  it('opens the store before it serves: the first track stalls nobody', async () => {
    const server = await OwnNatsServer.start();
    cleanups.push(() => server.stop());
    // PGlite: the slowest store to open is the one that would stall the first requests.
    const sc = new NatsSidecar({ natsUrl: server.url, env: { DATABASE_URL: '' } });
    cleanups.push(() => sc.kill());
    await sc.ready();
    const nc = await natsConnect(server.url);
    cleanups.push(() => nc.close());
    const track = requestJson(nc, 'track_execution', { prompt_id: 'first', success: true, execution_time_ms: 1 }, 5_000);
    const latencies = await Promise.all(
      Array.from({ length: 20 }, async () => {
        const t0 = Date.now();
        await requestJson(nc, 'health', {}, 5_000);
        return Date.now() - t0;
      }),
    );
    expect(((await track).body as { ok: { id: string } }).ok.id).toMatch(/^[0-9a-f-]{36}$/);
    // A store open stalls for seconds (a fresh PGlite costs six to eight of CPU); the first write's own
    // setup, queued before a health on PGlite's one connection, may take a few hundred ms on a busy machine.
    expect(Math.max(...latencies)).toBeLessThan(1000);
  }, 60_000);
});
