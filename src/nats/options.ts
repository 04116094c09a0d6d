/**
 * NATS connection options a deployment needs, from flags and environment:
 * several server URLs, user/password, token, NKEY seed or creds file, TLS
 * (CA, cert, key), a client name, and reconnect with capped exponential
 * backoff and jitter (forever: the sidecar keeps serving its Port while
 * NATS is away and resubscribes when it returns).
 *
 * Environment (flags override): NATS_URL (comma-separated list), NATS_USER,
 * NATS_PASSWORD, NATS_TOKEN, NATS_CREDS (path to a .creds file),
 * NATS_NKEY_SEED (the seed itself, or a path to a file holding it),
 * NATS_TLS_CA, NATS_TLS_CERT, NATS_TLS_KEY (paths), NATS_NAME,
 * NATS_RECONNECT_MAX_MS (backoff cap, default 5000).
 */
import fs from 'node:fs';
import os from 'node:os';
import { credsAuthenticator, nkeyAuthenticator, type Authenticator, type ConnectionOptions } from 'nats';

export interface NatsSettings {
  /** One or more server URLs (`nats://h1:4222,nats://h2:4222` is split). */
  servers: string[];
  user?: string;
  pass?: string;
  token?: string;
  /** Path to a `.creds` file (JWT + NKEY seed). */
  credsFile?: string;
  /** An NKEY user seed (`SU...`), or a path to a file holding one. */
  nkeySeed?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  name?: string;
  /** Backoff cap between reconnect attempts. */
  reconnectMaxMs?: number;
  /** First reconnect delay; doubles per failed attempt up to `reconnectMaxMs`. */
  reconnectBaseMs?: number;
}

const nonEmpty = (v: string | undefined): string | undefined => (v === undefined || v.trim() === '' ? undefined : v.trim());

export function splitServers(v: string | undefined): string[] {
  return (v ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/** Settings from the environment, with explicit values (flags) taking precedence. */
export function natsSettingsFromEnv(env: NodeJS.ProcessEnv = process.env, overrides: Partial<NatsSettings> = {}): NatsSettings {
  const s: NatsSettings = {
    servers: splitServers(env.NATS_URL),
    user: nonEmpty(env.NATS_USER),
    pass: nonEmpty(env.NATS_PASSWORD),
    token: nonEmpty(env.NATS_TOKEN),
    credsFile: nonEmpty(env.NATS_CREDS),
    nkeySeed: nonEmpty(env.NATS_NKEY_SEED),
    tlsCa: nonEmpty(env.NATS_TLS_CA),
    tlsCert: nonEmpty(env.NATS_TLS_CERT),
    tlsKey: nonEmpty(env.NATS_TLS_KEY),
    name: nonEmpty(env.NATS_NAME),
    reconnectMaxMs: env.NATS_RECONNECT_MAX_MS ? Number(env.NATS_RECONNECT_MAX_MS) : undefined,
  };
  for (const [k, v] of Object.entries(overrides)) if (v !== undefined) (s as unknown as Record<string, unknown>)[k] = v;
  return s;
}

/**
 * nats.js `ConnectionOptions` for these settings. Reconnects forever with
 * exponential backoff (base 250 ms, capped), and waits for the first
 * connect instead of failing when the server is not up yet.
 */
export function natsConnectOptions(s: NatsSettings): ConnectionOptions {
  if (s.servers.length === 0) throw new Error('NATS: no server URL (set --nats or NATS_URL)');
  const base = s.reconnectBaseMs ?? 250;
  const cap = Math.max(base, s.reconnectMaxMs ?? 5000);
  let attempt = 0;
  const opts: ConnectionOptions = {
    servers: s.servers,
    name: s.name ?? `prompt-engine@${os.hostname()}:${process.pid}`,
    reconnect: true,
    maxReconnectAttempts: -1,
    waitOnFirstConnect: true,
    // nats.js calls this before each reconnect round; we grow the wait per call and
    // reset it on a successful connect (see `resetBackoff`).
    reconnectDelayHandler: () => {
      const d = Math.min(cap, base * 2 ** Math.min(attempt++, 16));
      return Math.round(d / 2 + Math.random() * (d / 2));
    },
    pingInterval: 10_000,
    maxPingOut: 3,
  };
  (opts as ConnectionOptions & { resetBackoff?: () => void }).resetBackoff = () => {
    attempt = 0;
  };
  if (s.user !== undefined) {
    opts.user = s.user;
    if (s.pass !== undefined) opts.pass = s.pass;
  }
  if (s.token !== undefined) opts.token = s.token;
  const auths: Authenticator[] = [];
  if (s.credsFile !== undefined) auths.push(credsAuthenticator(new Uint8Array(fs.readFileSync(s.credsFile))));
  if (s.nkeySeed !== undefined) {
    const seed = /^S[A-Z2-7]{50,}$/.test(s.nkeySeed) ? s.nkeySeed : fs.readFileSync(s.nkeySeed, 'utf8').trim();
    auths.push(nkeyAuthenticator(new TextEncoder().encode(seed)));
  }
  if (auths.length > 0) opts.authenticator = auths.length === 1 ? auths[0] : auths;
  if (s.tlsCa !== undefined || s.tlsCert !== undefined || s.tlsKey !== undefined) {
    opts.tls = {};
    if (s.tlsCa !== undefined) opts.tls.caFile = s.tlsCa;
    if (s.tlsCert !== undefined) opts.tls.certFile = s.tlsCert;
    if (s.tlsKey !== undefined) opts.tls.keyFile = s.tlsKey;
  }
  return opts;
}

/** Reset the reconnect backoff after a successful (re)connect. */
export function resetBackoff(opts: ConnectionOptions): void {
  (opts as ConnectionOptions & { resetBackoff?: () => void }).resetBackoff?.();
}

/** The server list without credentials, for logs. */
export function redactServers(servers: string[]): string[] {
  return servers.map((u) => u.replace(/\/\/[^@/]*@/, '//***@'));
}
