/**
 * The engine's own NATS connection (service 'nats'), used by the parts that
 * talk to central_cloud. It connects in the background and keeps
 * reconnecting, so nothing waits for NATS: callers ask `current()` and fall
 * back when it is `undefined` (not configured, or not connected yet / now).
 * NATS peer mode (natsService.ts) serves on this same connection, so a
 * sidecar holds one NATS connection. Connection settings (server list,
 * auth, TLS, reconnect backoff) are the engine config's `nats`, made into
 * nats.js options by nats/options.ts.
 */
import { connect, type NatsConnection, type Status } from 'nats';
import type { NatsSettings } from '../config.js';
import { natsConnectOptions, redactServers, resetBackoff } from './options.js';

const COLD_START_MS = 2_000;

export class NatsLink {
  private nc: NatsConnection | undefined;
  private connected = false;
  private closed = false;
  private readonly ready: Promise<void>;
  private readonly onConnect: Array<(nc: NatsConnection) => void> = [];

  private readonly servers: string[];

  constructor(settings: NatsSettings, private readonly log: { info(o: object, m: string): void; warn(o: object, m: string): void }) {
    this.servers = settings.servers;
    const servers = settings.servers;
    const opts = natsConnectOptions(settings);
    this.ready = connect(opts).then(
      async (nc) => {
        if (this.closed) return void (await nc.close());
        this.nc = nc;
        this.connected = true;
        resetBackoff(opts);
        log.info({ servers: redactServers(servers) }, 'connected to NATS');
        for (const f of this.onConnect) f(nc);
        // The one watcher of this connection's status: everyone else listens through onStatus.
        for await (const s of nc.status()) {
          if (s.type === 'disconnect' || s.type === 'reconnecting') this.connected = false;
          if (s.type === 'reconnect') {
            this.connected = true;
            resetBackoff(opts);
          }
          for (const f of this.statusListeners) f(s);
        }
      },
      (err: unknown) => {
        this.failed = true;
        this.lastError = (err as Error).message;
        log.warn({ err: (err as Error).message }, 'NATS connection failed');
      },
    );
  }

  /** The cold start ends with the first connect, a failure for good, or `COLD_START_MS` after creation. */
  private readonly coldUntil = Date.now() + COLD_START_MS;
  private failed = false;
  private lastError: string | undefined;

  /** For `health`: undefined while connected, else why not (still connecting, reconnecting, gave up). */
  get problem(): string | undefined {
    if (this.current() !== undefined) return undefined;
    if (this.closed) return 'connection closed';
    if (this.failed) return `could not connect to ${redactServers(this.servers).join(',')}: ${this.lastError ?? 'failed'}`;
    if (this.nc === undefined) return `not connected yet to ${redactServers(this.servers).join(',')}`;
    return `disconnected from ${redactServers(this.servers).join(',')}, reconnecting`;
  }

  /**
   * During the cold start, wait (at most `ms`) for the first connect; afterwards
   * answer at once (a later outage is not waited for). True when connected.
   */
  async waitConnected(ms: number): Promise<boolean> {
    if (this.current() !== undefined) return true;
    const left = Math.min(ms, this.coldUntil - Date.now());
    if (this.nc !== undefined || this.closed || this.failed || left <= 0) return false;
    await Promise.race([this.ready, new Promise((r) => setTimeout(r, left).unref())]);
    return this.current() !== undefined;
  }

  private readonly statusListeners: Array<(s: Status) => void> = [];

  /** Status events of the shared connection (disconnect, reconnect, error), from its one watcher. */
  onStatus(f: (s: Status) => void): void {
    this.statusListeners.push(f);
  }

  /** The connection while it is up; undefined otherwise. */
  current(): NatsConnection | undefined {
    return this.connected && this.nc !== undefined && !this.nc.isClosed() ? this.nc : undefined;
  }

  /** Run `f` once connected (now, if already). Subscriptions made there survive reconnects. */
  whenConnected(f: (nc: NatsConnection) => void): void {
    if (this.nc !== undefined) f(this.nc);
    else this.onConnect.push(f);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.nc !== undefined && !this.nc.isClosed()) await this.nc.drain().catch(() => undefined);
    void this.ready;
  }
}
