/**
 * What a caller sees when what the sidecar depends on is away, through the
 * real sidecar process: `health` says `degraded` with the reason when the
 * database or NATS is unreachable, or the store cannot be opened (a PGlite
 * directory held by another sidecar), and `ok` again once it is back; and a
 * store read fails with `{:error, {:unavailable, "database unreachable: ..."}}`,
 * never `internal`, while tracking writes are still acknowledged (journaled).
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { record, type Term, type TermObject } from '../src/codec/terms.js';
import { requireEnv, sidecarStoreEnv, startPrivatePostgres, type PrivatePostgres } from './helpers/pg.js';
import { PortClient, type Reply } from './helpers/portClient.js';
import { holdsWithin } from './helpers/poll.js';

/** A loopback port nothing listens on. */
function closedPort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

const tmpDir = (): string => fs.mkdtempSync(path.join(os.tmpdir(), 'pe-health-'));

function sidecar(env: NodeJS.ProcessEnv): PortClient {
  return new PortClient({ env: { DATABASE_URL: '', NATS_URL: '', PROMPT_ENGINE_DATA_DIR: tmpDir(), LOG_LEVEL: 'fatal', ...env } });
}

async function health(c: PortClient): Promise<TermObject> {
  const r = await c.request('health', record({}));
  if (!r.ok) throw new Error(`health failed: ${r.reason} ${r.message}`);
  return r.value as TermObject;
}

const check = (h: TermObject, name: string): TermObject => (h.checks as TermObject)[name] as TermObject;
const execution = (): TermObject => record({ prompt_id: 'health-p', success: true, execution_time_ms: 5 });

describe('health and store errors when the database is away', () => {
  it('a DATABASE_URL on a closed port: degraded health, unavailable reads, journaled writes', async () => {
    const port = await closedPort();
    const c = sidecar({ DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/nowhere` });
    await c.ready;
    const h = await health(c);
    expect(h.status).toBe('degraded');
    expect(check(h, 'database').status).toBe('down');
    expect((h.reasons as string[]).join('\n')).toMatch(new RegExp(`^database: postgres: .*(ECONNREFUSED|${port})`, 'm'));
    expect(check(h, 'nats')).toMatchObject({ status: 'not_configured' });

    for (const [op, args] of [
      ['query', record({ kind: 'prompt_executions', prompt_id: 'health-p' })],
      ['prompt_stats', record({ prompt_id: 'health-p' })],
    ] as Array<[string, TermObject]>) {
      const r: Reply = await c.request(op, args);
      expect(r, op).toMatchObject({ ok: false, reason: 'unavailable' });
      expect(!r.ok && r.message, op).toMatch(/^database unreachable: /);
    }
    // select_variant draws without evidence rather than failing (documented in docs/ops.md).
    expect(await c.request('select_variant', record({ test_id: 't', variants: ['a', 'b'] }))).toMatchObject({ ok: true });
    // Writes are still promised: fsync'd to the journal until the database answers.
    expect(await c.request('track_execution', execution())).toMatchObject({ ok: true });
    expect(String((check(await health(c), 'database').detail))).toMatch(/1 tracking entries wait in the journal/);
    expect((await c.close()).code).toBe(0);
  }, 90_000);

  describe('a PostgreSQL that stops and comes back', () => {
    let server: PrivatePostgres;
    beforeAll(async () => {
      server = await startPrivatePostgres();
    }, 60_000);
    afterAll(() => server?.destroy());

    it('ok while up, degraded with the reason while stopped, ok again after', async () => {
      const c = sidecar({ DATABASE_URL: server.url });
      await c.ready;
      expect(await holdsWithin(async () => (await health(c)).status === 'ok', 10_000)).toBe(true);
      expect(check(await health(c), 'database')).toMatchObject({ status: 'ok', detail: 'postgres' });
      expect(await c.request('query', record({ kind: 'prompt_executions', prompt_id: 'x' }))).toMatchObject({ ok: true });

      server.stop();
      const h = await health(c);
      expect(h.status).toBe('degraded');
      expect((h.reasons as string[])[0]).toMatch(/^database: postgres: /);
      const q = await c.request('query', record({ kind: 'prompt_executions', prompt_id: 'x' }));
      expect(q).toMatchObject({ ok: false, reason: 'unavailable' });

      server.start();
      expect(await holdsWithin(async () => (await health(c)).status === 'ok', 15_000)).toBe(true);
      expect(await c.request('query', record({ kind: 'prompt_executions', prompt_id: 'x' }))).toMatchObject({ ok: true });
      expect((await c.close()).code).toBe(0);
    }, 60_000);
  });
});

describe('health when the store cannot be opened', () => {
  it('a second sidecar on a PGlite directory held by another: unavailable naming the holder, health degraded; ok once the holder is gone', async () => {
    const dir = tmpDir();
    // The first holds the directory before the second starts: which one wins a race is not what is tested.
    const first = sidecar({ PROMPT_ENGINE_DATA_DIR: dir });
    await first.ready;
    const second = sidecar({ PROMPT_ENGINE_DATA_DIR: dir });
    await second.ready;
    expect(await first.request('track_execution', execution())).toMatchObject({ ok: true });
    // A Port sidecar opens its store before its handshake: the second one tried, and says so at once.
    expect(check(await health(second), 'database')).toMatchObject({ status: 'down' });
    const refused = await second.request('track_execution', execution());
    expect(refused).toMatchObject({ ok: false, reason: 'unavailable' });
    expect(!refused.ok && refused.message).toContain(`in use by process ${first.pid}`);
    const h = await health(second);
    expect(h.status).toBe('degraded');
    expect(check(h, 'database')).toMatchObject({ status: 'down' });
    expect((h.reasons as string[]).join('\n')).toMatch(new RegExp(`^database: tracking store: .*in use by process ${first.pid}`, 'm'));
    // The holder stops: the next health opens the store and says ok.
    expect((await first.close()).code).toBe(0);
    expect(await holdsWithin(async () => (await health(second)).status === 'ok', 30_000)).toBe(true);
    expect(check(await health(second), 'database')).toMatchObject({ status: 'ok', detail: 'pglite' });
    expect(await second.request('track_execution', execution())).toMatchObject({ ok: true });
    expect((await second.close()).code).toBe(0);
  }, 90_000);
});

describe('health when NATS is away', () => {
  it('NATS_URL on a closed port: degraded, naming NATS; the Port keeps serving', async () => {
    const port = await closedPort();
    // About NATS: the store on the suite's PostgreSQL (a fresh PGlite store costs seconds).
    const c = sidecar({ NATS_URL: `nats://127.0.0.1:${port}`, ...sidecarStoreEnv(`health-nats-closed-${process.pid}`) });
    await c.ready;
    const h = await health(c);
    expect(h.status).toBe('degraded');
    expect(check(h, 'nats').status).toBe('down');
    expect((h.reasons as string[]).join('\n')).toMatch(new RegExp(`^nats: .*127\\.0\\.0\\.1:${port}`, 'm'));
    // A Port sidecar opens its store before its ready handshake (ready means ready): the database is ok.
    expect(check(h, 'database')).toMatchObject({ status: 'ok' });
    expect(await c.request('echo', record({ still: 'serving' }))).toMatchObject({ ok: true });
    expect((await c.close()).code).toBe(0);
  }, 90_000);

  it('a reachable NATS: ok', async () => {
    const c = sidecar({ NATS_URL: requireEnv('TEST_NATS_URL'), ...sidecarStoreEnv(`health-nats-ok-${process.pid}`) });
    await c.ready;
    expect(await holdsWithin(async () => (await health(c)).status === 'ok', 5_000)).toBe(true);
    expect(check(await health(c), 'nats')).toMatchObject({ status: 'ok', detail: 'connected' } as Record<string, Term>);
    expect((await c.close()).code).toBe(0);
  }, 90_000);
});
