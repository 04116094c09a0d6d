/**
 * Test-side NATS helpers: the sidecar in `serve --nats` mode (optionally
 * with its Port on stdio), a private nats-server with JetStream for tests
 * that kill or restart it, and request helpers for JSON and ETF bodies.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { connect, headers, type Msg, type NatsConnection } from 'nats';
import { decode, encode } from '../../src/codec/etf.js';
import type { Term } from '../../src/codec/terms.js';
import { REPO, processAlive, waitGone } from './erlang.js';
import { sidecarStoreEnv } from './pg.js';
import { PortClient } from './portClient.js';

/** The real sidecar entry (compiled): `serve --nats <url>` (see README: NATS peer mode). */
export const SERVE_JS = path.join(REPO, 'dist', 'src', 'cli.js');

export function requireEnv(name: string): string {
  const v = process.env[name];
  if (v === undefined || v === '') throw new Error(`${name} is not set: run the tests through scripts/with-services.sh (npm test)`);
  return v;
}

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

/** A nats-server with JetStream that the test owns (to kill and restart it). */
export class OwnNatsServer {
  proc: ChildProcess | undefined;
  readonly storeDir = tmpDir('pe-nats-js-');
  constructor(
    readonly port: number,
    readonly extraArgs: string[] = [],
  ) {}
  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }
  static async start(extraArgs: string[] = []): Promise<OwnNatsServer> {
    const s = new OwnNatsServer(await freePort(), extraArgs);
    await s.start();
    return s;
  }
  async start(): Promise<void> {
    const bin = requireEnv('TEST_NATS_SERVER');
    const js = this.extraArgs.includes('--no-js') ? [] : ['-js', '-sd', this.storeDir];
    this.proc = spawn(bin, ['-a', '127.0.0.1', '-p', String(this.port), ...js, ...this.extraArgs.filter((a) => a !== '--no-js')], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.proc.stderr!.resume();
    const until = Date.now() + 10_000;
    while (Date.now() < until) {
      if (await canConnect(this.port)) return;
      await sleep(50);
    }
    throw new Error('nats-server did not start');
  }
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const p = this.proc;
    if (p?.pid === undefined || p.exitCode !== null) return;
    p.kill(signal);
    if (!(await waitGone(p.pid, 5000))) p.kill('SIGKILL');
    await waitGone(p.pid, 2000);
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface SidecarOptions {
  natsUrl: string;
  withPort?: boolean;
  env?: NodeJS.ProcessEnv;
}

/** The real sidecar process in NATS peer mode. With `withPort` it also speaks the Port on stdio (a PortClient drives it). */
export class NatsSidecar {
  readonly proc: ChildProcess;
  readonly port: PortClient | undefined;
  readonly dataDir = tmpDir('pe-nats-sidecar-');
  private stderrText = '';
  readonly serving: Promise<void>;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(opts: SidecarOptions) {
    // The store on the suite's PostgreSQL in a schema of this sidecar's own, unless the test names a database
    // (DATABASE_URL; '' for PGlite): these tests are about NATS.
    const store = opts.env?.DATABASE_URL === undefined ? sidecarStoreEnv(this.dataDir) : {};
    const env = { PROMPT_ENGINE_DATA_DIR: this.dataDir, ...store, NATS_URL: '', LOG_LEVEL: 'info', ...opts.env };
    const args = [SERVE_JS, 'serve', '--nats', opts.natsUrl, ...(opts.withPort ? ['--port'] : [])];
    if (opts.withPort) {
      this.port = new PortClient({ command: process.execPath, commandArgs: args, env });
      this.proc = this.port.proc;
    } else {
      this.proc = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
    }
    let resolveServing!: () => void;
    this.serving = new Promise((r) => (resolveServing = r));
    this.proc.stderr!.on('data', (c: Buffer) => {
      this.stderrText += c.toString();
      if (this.stderrText.includes('NATS peer mode serving')) resolveServing();
      if (this.stderrText.length > 1_000_000) this.stderrText = this.stderrText.slice(-500_000);
    });
    this.exited = new Promise((resolve) => this.proc.on('exit', (code, signal) => resolve({ code, signal })));
  }

  get pid(): number {
    return this.proc.pid!;
  }

  get stderr(): string {
    return this.stderrText;
  }

  // The store opens before NATS serving starts: a fresh PGlite store takes seconds, tens of seconds on a busy machine.
  async ready(ms = 90_000): Promise<this> {
    await Promise.race([
      this.serving,
      sleep(ms).then(() => {
        throw new Error(`sidecar not serving after ${ms} ms; stderr:\n${this.stderrText.slice(-3000)}`);
      }),
      this.exited.then((e) => {
        throw new Error(`sidecar exited (${JSON.stringify(e)}); stderr:\n${this.stderrText.slice(-3000)}`);
      }),
    ]);
    return this;
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (!processAlive(this.pid)) return;
    this.proc.kill(signal);
    await this.exited;
  }
}

export const ETF_CT = 'application/x-erlang-binary';

export async function natsConnect(url: string): Promise<NatsConnection> {
  return connect({ servers: url, name: 'prompt-engine-test' });
}

export function etfHeaders(): ReturnType<typeof headers> {
  const h = headers();
  h.set('content-type', ETF_CT);
  return h;
}

/** Request with a JSON body; returns the parsed body and the message. */
export async function requestJson(nc: NatsConnection, op: string, body: unknown, timeout = 10_000): Promise<{ body: unknown; msg: Msg }> {
  const msg = await nc.request(`prompt_engine.${op}`, body === undefined ? new Uint8Array() : Buffer.from(JSON.stringify(body)), { timeout });
  return { body: JSON.parse(Buffer.from(msg.data).toString('utf8')) as unknown, msg };
}

/** Request with an ETF body (`content-type: application/x-erlang-binary`); returns the decoded reply term. */
export async function requestEtf(nc: NatsConnection, op: string, args: Term | Buffer, timeout = 10_000): Promise<{ term: Term; msg: Msg }> {
  const data = Buffer.isBuffer(args) ? args : encode(args);
  const msg = await nc.request(`prompt_engine.${op}`, data, { timeout, headers: etfHeaders() });
  return { term: decode(Buffer.from(msg.data)), msg };
}
