/**
 * The engine's own NATS connection (service 'nats'), used by the parts that
 * talk to central_cloud. It connects in the background and keeps
 * reconnecting, so nothing waits for NATS: callers ask `current()` and fall
 * back when it is `undefined` (not configured, or not connected yet / now).
 * NATS peer mode (natsService.ts) serves on this same connection, so a
 * sidecar holds one NATS connection. Connection settings (server list,
 * auth, TLS, reconnect backoff) come from nats/options.ts.
 */
import { connect, type NatsConnection } from 'nats';
import { natsConnectOptions, natsSettingsFromEnv, redactServers, resetBackoff } from './options.js';

export class NatsLink {
  private nc: NatsConnection | undefined;
  private connected = false;
  private closed = false;
  private readonly ready: Promise<void>;
  private readonly onConnect: Array<(nc: NatsConnection) => void> = [];

  constructor(servers: string[], private readonly log: { info(o: object, m: string): void; warn(o: object, m: string): void }) {
    const opts = natsConnectOptions(natsSettingsFromEnv(process.env, { servers }));
    this.ready = connect(opts).then(
      async (nc) => {
        if (this.closed) return void (await nc.close());
        this.nc = nc;
        this.connected = true;
        resetBackoff(opts);
        log.info({ servers: redactServers(servers) }, 'connected to NATS');
        for (const f of this.onConnect) f(nc);
        for await (const s of nc.status()) {
          if (s.type === 'disconnect' || s.type === 'reconnecting') this.connected = false;
          if (s.type === 'reconnect') {
            this.connected = true;
            resetBackoff(opts);
          }
        }
      },
      (err: unknown) => log.warn({ err: (err as Error).message }, 'NATS connection failed'),
    );
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
