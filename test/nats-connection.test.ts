/**
 * Connection settings a deployment needs (nats/options.ts), each against a
 * real nats-server configured for it: several URLs, token, user/password,
 * NKEY seed, TLS with a private CA and client certificates; and the real
 * sidecar reading them from NATS_* variables.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { connect, nkeys, type ConnectionOptions } from 'nats';
import { natsSettingsFromEnv } from '../src/config.js';
import { natsConnectOptions } from '../src/nats/options.js';
import { NatsSidecar, OwnNatsServer, freePort, requestJson, tmpDir } from './helpers/nats.js';

const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

async function server(args: string[]): Promise<OwnNatsServer> {
  const s = await OwnNatsServer.start(args);
  cleanups.push(() => s.stop());
  return s;
}

/** Connect with the options built from `env`, round-trip one message, close. */
async function roundTrip(env: NodeJS.ProcessEnv): Promise<string> {
  const nc = await connect(natsConnectOptions(natsSettingsFromEnv(env)));
  try {
    const sub = nc.subscribe('t.ping', { callback: (_e, m) => m.respond(Buffer.from(`pong from ${m.subject}`)) });
    const r = await nc.request('t.ping', Buffer.from('x'), { timeout: 2000 });
    sub.unsubscribe();
    return Buffer.from(r.data).toString();
  } finally {
    await nc.close();
  }
}

/** The same settings must be refused without the right secret (no waiting, no retries). */
async function refused(env: NodeJS.ProcessEnv): Promise<boolean> {
  const opts: ConnectionOptions = { ...natsConnectOptions(natsSettingsFromEnv(env)), waitOnFirstConnect: false, reconnect: false, timeout: 2000 };
  try {
    const nc = await connect(opts);
    await nc.close();
    return false;
  } catch {
    return true;
  }
}

describe('connection settings from NATS_* variables', () => {
  it('NATS_URL with several servers: a dead first server is skipped', async () => {
    const s = await server([]);
    const dead = await freePort();
    expect(await roundTrip({ NATS_URL: `nats://127.0.0.1:${dead}, ${s.url}` })).toBe('pong from t.ping');
  });

  it('NATS_TOKEN', async () => {
    const s = await server(['--auth', 's3cret-token']);
    expect(await roundTrip({ NATS_URL: s.url, NATS_TOKEN: 's3cret-token' })).toBe('pong from t.ping');
    expect(await refused({ NATS_URL: s.url, NATS_TOKEN: 'wrong' })).toBe(true);
  });

  it('NATS_USER + NATS_PASSWORD, and the sidecar serving with them', async () => {
    const s = await server(['--user', 'pe', '--pass', 'pw-1']);
    expect(await roundTrip({ NATS_URL: s.url, NATS_USER: 'pe', NATS_PASSWORD: 'pw-1' })).toBe('pong from t.ping');
    expect(await refused({ NATS_URL: s.url, NATS_USER: 'pe', NATS_PASSWORD: 'nope' })).toBe(true);
    const sc = new NatsSidecar({ natsUrl: s.url, env: { NATS_USER: 'pe', NATS_PASSWORD: 'pw-1' } });
    cleanups.push(() => sc.kill());
    await sc.ready();
    const nc = await connect({ servers: s.url, user: 'pe', pass: 'pw-1' });
    expect((await requestJson(nc, 'echo', { via: 'auth' })).body).toEqual({ ok: { via: 'auth' } });
    await nc.close();
    expect(sc.stderr).not.toContain('pw-1'); // no secrets in logs
  });

  it('NATS_NKEY_SEED (the seed itself, or a file holding it)', async () => {
    const user = nkeys.createUser();
    const seed = new TextDecoder().decode(user.getSeed());
    const dir = tmpDir('pe-nkey-');
    const conf = path.join(dir, 'nkey.conf');
    fs.writeFileSync(conf, `authorization { users = [ { nkey: ${user.getPublicKey()} } ] }\n`);
    const s = await server(['-c', conf]);
    expect(await roundTrip({ NATS_URL: s.url, NATS_NKEY_SEED: seed })).toBe('pong from t.ping');
    fs.writeFileSync(path.join(dir, 'user.nk'), `${seed}\n`);
    expect(await roundTrip({ NATS_URL: s.url, NATS_NKEY_SEED: path.join(dir, 'user.nk') })).toBe('pong from t.ping');
    const other = new TextDecoder().decode(nkeys.createUser().getSeed());
    expect(await refused({ NATS_URL: s.url, NATS_NKEY_SEED: other })).toBe(true);
    // as an env file may quote it
    expect(await roundTrip({ NATS_URL: s.url, NATS_NKEY_SEED: ` "${seed}"\n` })).toBe('pong from t.ping');
    // a mistyped seed is not read as a file name into an error (errors are logged and answered): the value never shows
    for (const typo of [seed.toLowerCase(), `${seed.slice(0, 20)}-${seed.slice(21)}`, `"${seed}`]) {
      const err = (() => {
        try {
          natsConnectOptions(natsSettingsFromEnv({ NATS_URL: s.url, NATS_NKEY_SEED: typo }));
          return undefined;
        } catch (e) {
          return e as Error & { path?: string };
        }
      })();
      expect(err?.message).toMatch(/^NATS_NKEY_SEED: /);
      expect(`${err?.message} ${err?.path ?? ''} ${err?.stack ?? ''}`).not.toContain(seed.slice(2, 30));
      expect(`${err?.message}`.toLowerCase()).not.toContain(seed.slice(2, 30).toLowerCase());
    }
  });

  it('NATS_TLS_CA, NATS_TLS_CERT, NATS_TLS_KEY: TLS with a private CA and a client certificate', async () => {
    const dir = tmpDir('pe-tls-');
    const ssl = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
    ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=pe-test-ca');
    fs.writeFileSync(path.join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
    for (const who of ['server', 'client']) {
      ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${who}.key`, '-out', `${who}.csr`, '-subj', `/CN=pe-${who}`);
      ssl('x509', '-req', '-in', `${who}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${who}.pem`, '-days', '2', '-extfile', 'san.ext');
    }
    const f = (n: string): string => path.join(dir, n);
    const s = await server(['--tlsverify', '--tlscert', f('server.pem'), '--tlskey', f('server.key'), '--tlscacert', f('ca.pem')]);
    const url = `tls://127.0.0.1:${s.port}`;
    expect(await roundTrip({ NATS_URL: url, NATS_TLS_CA: f('ca.pem'), NATS_TLS_CERT: f('client.pem'), NATS_TLS_KEY: f('client.key') })).toBe('pong from t.ping');
    // Without a client certificate the server refuses us.
    expect(await refused({ NATS_URL: url, NATS_TLS_CA: f('ca.pem') })).toBe(true);
  });

  it('reconnects forever with capped exponential backoff and jitter', () => {
    const o = natsConnectOptions(natsSettingsFromEnv({ NATS_URL: 'nats://a:1,nats://b:2', NATS_RECONNECT_MAX_MS: '2000', NATS_NAME: 'pe-x' }));
    expect(o.servers).toEqual(['nats://a:1', 'nats://b:2']);
    expect(o.name).toBe('pe-x');
    expect(o.maxReconnectAttempts).toBe(-1);
    expect(o.waitOnFirstConnect).toBe(true);
    const delays = Array.from({ length: 12 }, () => o.reconnectDelayHandler!());
    expect(delays[0]).toBeLessThanOrEqual(250);
    expect(Math.max(...delays)).toBeLessThanOrEqual(2000);
    expect(Math.max(...delays.slice(8))).toBeGreaterThanOrEqual(1000);
  });
});
