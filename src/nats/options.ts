/**
 * NATS connection options a deployment needs, from the settings config.ts
 * read (NATS_URL and NATS_*, flags over them): several server URLs,
 * user/password, token, NKEY seed or creds file, TLS (CA, cert, key), a
 * client name, and reconnect with capped exponential backoff and jitter
 * (forever: the sidecar keeps serving its Port while NATS is away and
 * resubscribes when it returns; cap NATS_RECONNECT_MAX_MS, default 5000).
 */
import fs from 'node:fs';
import os from 'node:os';
import { credsAuthenticator, nkeyAuthenticator, type Authenticator, type ConnectionOptions } from 'nats';
import type { NatsSettings } from '../config.js';

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
    const seed = nkeySeed(s.nkeySeed);
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

const SEED = /^S[A-Z2-7]{50,}$/;

/**
 * NATS_NKEY_SEED: the seed itself (quotes from an env file and spaces
 * around it ignored), else a file holding it. Its errors never carry the
 * value: a mistyped seed would otherwise be logged and answered as a file
 * name.
 */
function nkeySeed(value: string): string {
  const bare = value.trim().replace(/^(["'])(.*)\1$/, '$2').trim();
  if (SEED.test(bare)) return bare;
  if (SEED.test(bare.toUpperCase())) throw new Error('NATS_NKEY_SEED: a seed is upper case (S, then base32 letters and digits 2-7)');
  let text: string;
  try {
    text = fs.readFileSync(bare, 'utf8');
  } catch (err) {
    throw new Error(`NATS_NKEY_SEED: neither a seed (S, then 50 or more base32 characters) nor a file that can be read (${(err as { code?: string }).code ?? 'unreadable'})`);
  }
  const seed = text.trim();
  if (!SEED.test(seed)) throw new Error('NATS_NKEY_SEED: the file it names does not hold a seed (S, then 50 or more base32 characters)');
  return seed;
}

/** Reset the reconnect backoff after a successful (re)connect. */
export function resetBackoff(opts: ConnectionOptions): void {
  (opts as ConnectionOptions & { resetBackoff?: () => void }).resetBackoff?.();
}

/** The server list without credentials, for logs. */
export function redactServers(servers: string[]): string[] {
  return servers.map((u) => u.replace(/\/\/[^@/]*@/, '//***@'));
}
