/**
 * The transports part, NATS side (README: NATS peer mode): every op of the op table as
 * an endpoint `prompt_engine.<op>` of one NATS micro-service named
 * `prompt_engine`, in queue group `prompt_engine`, so any number of
 * sidecars share the load and each answers `$SRV.PING/INFO/STATS`.
 *
 * Client library: the `nats` v2 package (nats.js). It bundles the services
 * API and JetStream in one stable release; the v3 split packages
 * (`@nats-io/transport-node`, `@nats-io/services`) still ship the services
 * API only as a prerelease.
 *
 * Bodies are JSON or ETF (see natsPayload.ts); `track_*` go through a
 * JetStream stream when the server has JetStream (natsTracking.ts). It
 * serves on the engine's one NATS connection (nats/link.ts) and never
 * opens one of its own.
 *
 * One thing is patched by hand: nats.js v2 times an endpoint handler and
 * counts its errors only around the synchronous call, which for our async
 * ops would report ~0 latency and no errors. We add the rest of each
 * request's latency and its error to the library's own per-endpoint
 * figures when the op completes, so `$SRV.STATS` tells the truth.
 */
import { withTimeout } from '../timeouts.js';
import { Events, Match, type NatsConnection, type Service, type ServiceMsg, type Status } from 'nats';
import type { Logger } from 'pino';
import type { NatsLink } from '../nats/link.js';
import type { TermObject } from '../codec/terms.js';
import { record } from '../codec/terms.js';
import type { AppEngine } from '../services.js';
import { InFlight, RequestContext, type Cancellation } from './inFlight.js';
import type { OpResult, OpTable } from '../ops/index.js';
import { PROTOCOL_VERSION, VERSION } from '../version.js';
import { encodeReply, encodingOf, ETF_CONTENT_TYPE, JSON_CONTENT_TYPE, parseArgs } from './natsPayload.js';

import { DEFAULT_TRACKING, TrackingStream, type TrackingStreamOptions } from './natsTracking.js';

export interface NatsServiceOptions {
  /** Subject prefix and service name. Default `prompt_engine`. */
  prefix?: string;
  /** Queue group. Default `prompt_engine`. */
  queue?: string;
  /** `auto` (default): durable tracking when the server has JetStream; `off`: straight to the store. */
  jetstream?: 'auto' | 'off';
  tracking?: Partial<Omit<TrackingStreamOptions, 'prefix'>>;
  /** Requests running at once in this instance; beyond it callers get `overloaded`. Default: the engine's config (PROMPT_ENGINE_NATS_MAX_IN_FLIGHT). */
  maxInFlight?: number;
  /** How long in-flight requests may run after `stop()` before they are aborted. */
  drainMs?: number;
  /** How long `startNatsService` waits for the first connect before returning (serving starts when it connects). */
  connectWaitMs?: number;
  /**
   * Deadline of a request that names none (header `Prompt-Engine-Timeout-Ms`
   * or `timeout_ms` in a JSON body): past it the work is cancelled, its slot
   * freed and a `timeout` error replied. Default: the engine's config
   * (PROMPT_ENGINE_NATS_DEADLINE_MS), so abandoned requests cannot hold
   * their slots (and keep `overloaded` answered) for long.
   */
  defaultDeadlineMs?: number;
}

/** The request header that carries a caller's deadline in milliseconds. */
export const DEADLINE_HEADER = 'Prompt-Engine-Timeout-Ms';
const MAX_DEADLINE_MS = 3_600_000;

export interface NatsServiceHandle {
  /** Resolves when the service is registered (after the first connect). */
  readonly ready: Promise<void>;
  readonly connection: Promise<NatsConnection>;
  /** Stop taking requests (drain the subscriptions), finish in-flight ones, flush, close. Idempotent. */
  stop(): Promise<void>;
  figures(): TermObject;
}

interface EndpointFigures {
  num_requests: number;
  num_errors: number;
  last_error?: string;
  processing_time: number;
  average_processing_time: number;
  countError(err: Error): void;
}

export async function startNatsService(engine: AppEngine, table: OpTable, opts: NatsServiceOptions = {}): Promise<NatsServiceHandle> {
  const svc = new NatsPeer(engine, table, opts);
  await Promise.race([svc.ready.catch(() => undefined), new Promise((r) => setTimeout(r, opts.connectWaitMs ?? 3000).unref())]);
  return svc;
}

class NatsPeer implements NatsServiceHandle {
  readonly ready: Promise<void>;
  readonly connection: Promise<NatsConnection>;
  private readonly log: Logger;
  private readonly prefix: string;
  private readonly queue: string;
  private service: Service | undefined;
  private tracking: TrackingStream | undefined;
  private readonly inFlight: InFlight<number>;
  private stopping: Promise<void> | undefined;
  private readonly endpointFigures = new Map<string, EndpointFigures>();
  private counts = { requests: 0, errors: 0, overloaded: 0, expired: 0, disconnects: 0, reconnects: 0 };
  private connected = false;
  private drained = false;
  private readonly defaultDeadlineMs: number;

  constructor(
    private readonly engine: AppEngine,
    private readonly table: OpTable,
    private readonly opts: NatsServiceOptions,
  ) {
    this.log = engine.log.child({ transport: 'nats' });
    this.inFlight = new InFlight(opts.maxInFlight ?? engine.config.natsMaxInFlight, 'PROMPT_ENGINE_NATS_MAX_IN_FLIGHT');
    this.defaultDeadlineMs = opts.defaultDeadlineMs ?? engine.config.natsDeadlineMs;
    this.prefix = opts.prefix ?? 'prompt_engine';
    this.queue = opts.queue ?? 'prompt_engine';
    // The engine's one NATS connection (service 'nats', nats/link.ts, to engine.config.nats): there is
    // no other. The engine closes it after we have drained.
    let shared: NatsLink | undefined;
    this.connection = engine.service('nats').then((link) => {
      if (link === undefined) throw new Error('NATS peer mode: no server URL (give --nats <url> or set NATS_URL)');
      shared = link;
      this.log.info('waiting for the NATS connection');
      return new Promise<NatsConnection>((resolve) => link.whenConnected(resolve));
    });
    this.ready = this.connection.then(async (nc) => {
      this.connected = true;
      // The connection's one status watcher is the link's.
      shared?.onStatus((st) => this.onStatus(st));
      await this.register(nc);
    });
    this.ready.catch((err: unknown) => this.log.error({ err }, 'NATS peer mode failed to start'));
    engine.registerFigures('nats', () => this.figures());
  }

  private onStatus(s: Status): void {
    if (s.type === Events.Disconnect) {
      this.connected = false;
      this.counts.disconnects++;
      this.log.warn({ server: s.data }, 'NATS disconnected; Port callers are still served, reconnecting');
    } else if (s.type === Events.Reconnect) {
      this.connected = true;
      this.counts.reconnects++;
      this.log.info({ server: s.data }, 'NATS reconnected; subscriptions restored');
    } else if (s.type === Events.Error) {
      this.log.warn({ err: String(s.data) }, 'NATS error');
    }
  }

  private async register(nc: NatsConnection): Promise<void> {
    // What serving needs starts before we announce ourselves: the first track must not stall every
    // request behind the store's first open (seconds for PGlite). A store that cannot start is not
    // waited for: its ops answer {:unavailable, _} and the rest are served.
    await withTimeout(this.engine.service('store'), 15_000).catch((err: unknown) => this.log.warn({ err: (err as Error).message }, 'serving without a tracking store'));
    if (this.opts.jetstream !== 'off') {
      const ackWait = this.engine.config.trackAckWaitMs;
      const fromConfig = ackWait !== undefined ? { ackWaitMs: ackWait } : {};
      const t = new TrackingStream(nc, this.engine, this.table, this.log, { ...DEFAULT_TRACKING, ...fromConfig, ...this.opts.tracking, prefix: this.prefix });
      if (await t.setup()) this.tracking = t;
    }
    if (this.stopping !== undefined) return;
    const service = await nc.services.add({
      name: this.prefix,
      version: VERSION,
      description: 'prompt-engine: prompt optimization, templates, tracking and learning for Elixir apps',
      queue: this.queue,
      metadata: {
        protocol: String(PROTOCOL_VERSION),
        encodings: `${JSON_CONTENT_TYPE},${ETF_CONTENT_TYPE}`,
        durable_tracking: this.tracking !== undefined ? 'jetstream' : 'direct',
        os_pid: String(process.pid),
      },
      statsHandler: async () => ({ in_flight: this.inFlight.size }),
    });
    const group = service.addGroup(this.prefix, this.queue);
    for (const op of this.table.names) {
      group.addEndpoint(op, {
        handler: (err, msg) => {
          if (err !== null) return void this.log.error({ err: err.message, op }, 'NATS endpoint error');
          this.onRequest(op, msg);
        },
        metadata: { op, ...(this.table.durableKindOf(op) !== undefined && this.tracking !== undefined ? { durable: 'jetstream' } : {}) },
      });
    }
    this.service = service;
    void service.stopped.then((err) => {
      if (this.stopping === undefined) this.log.error({ err: err instanceof Error ? err.message : null }, 'NATS service stopped unexpectedly');
    });
    this.findEndpointFigures(service);
    // The server has our subscriptions once this round trip returns: only then are we "serving".
    await nc.flush();
    this.log.info({ ops: this.table.names.length, queue: this.queue, jetstream: this.tracking !== undefined, id: service.info().id }, 'NATS peer mode serving');
  }

  /** The library's per-endpoint figures (see the header); empty if its internals moved. */
  private findEndpointFigures(service: Service): void {
    const handlers = (service as unknown as { handlers?: unknown }).handlers;
    if (!Array.isArray(handlers)) return;
    for (const h of handlers as Array<{ name?: unknown; stats?: Partial<EndpointFigures> }>) {
      const s = h.stats;
      if (typeof h.name === 'string' && s !== undefined && typeof s.countError === 'function' && typeof s.processing_time === 'number')
        this.endpointFigures.set(h.name, s as EndpointFigures);
    }
  }

  private onRequest(op: string, msg: ServiceMsg): void {
    const t0 = performance.now();
    this.counts.requests++;
    const enc = encodingOf(msg.headers);
    // Requests already routed to us while the subscriptions drain are served; only after that do we refuse.
    if (this.drained) return this.respond(op, msg, { ok: false, reason: 'shutting_down', message: 'the sidecar is shutting down' }, enc, t0);
    if (this.inFlight.full) {
      this.counts.overloaded++;
      return this.respond(op, msg, this.inFlight.overloaded(), enc, t0);
    }
    const parsed = parseArgs(msg.data, enc);
    if (!parsed.ok) return this.respond(op, msg, parsed, enc, t0);
    const deadline = this.deadlineOf(msg, parsed.args as TermObject);
    if (typeof deadline === 'string') return this.respond(op, msg, { ok: false, reason: 'bad_request', message: deadline }, enc, t0);
    // Not async: the op's own promise is the request's (an async wrapper around it cost two more microtask hops).
    const run = (c: Cancellation): Promise<OpResult> => {
      if (this.tracking !== undefined && this.table.durableKindOf(op) !== undefined) {
        const bad = this.table.check(op, parsed.args);
        if (bad !== undefined) return Promise.resolve(bad);
        return this.tracking.publish(op, parsed.args as TermObject, c.signal, deadline);
      }
      // The signal is made only for an op that reads it (an AbortController per request: BENCHMARKS.md, Hot-path goals).
      return this.table.dispatch(op, parsed.args, new RequestContext(c, this.engine, this.log, 'nats'));
    };
    // A caller that gave up is gone: past its deadline the work is cancelled and its slot freed at once.
    const key = this.inFlight.key();
    let expired = false;
    const timer = setTimeout(() => {
      expired = true;
      this.counts.expired++;
      // Work that does not stop at the abort keeps its slot until it ends, at most the default deadline.
      this.inFlight.expire(key, this.defaultDeadlineMs);
      this.respond(op, msg, { ok: false, reason: 'timeout', message: `no result within the request's deadline of ${deadline} ms; the work was cancelled` }, enc, t0);
    }, deadline);
    const settle = (r: OpResult): void => {
      clearTimeout(timer);
      if (!expired) this.respond(op, msg, r, enc, t0);
    };
    this.inFlight.start(key, run).then(settle, (err: unknown) => settle({ ok: false, reason: 'internal', message: err instanceof Error ? err.message : String(err) }));
  }

  /** The request's deadline in ms (header, then `timeout_ms` in the body, then the default), or an error message. */
  private deadlineOf(msg: ServiceMsg, args: TermObject): number | string {
    // Header names are case-insensitive (HTTP's convention, which NATS headers follow; Gnat and others send them lower-case).
    const fromHeader = msg.headers?.get(DEADLINE_HEADER, Match.IgnoreCase);
    const raw: unknown = fromHeader !== undefined && fromHeader !== '' ? Number(fromHeader) : args.timeout_ms;
    if ('timeout_ms' in args) delete args.timeout_ms;
    if (raw === undefined || raw === null) return this.defaultDeadlineMs;
    const n = typeof raw === 'bigint' ? Number(raw) : raw;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > MAX_DEADLINE_MS) return `timeout_ms: expected an integer in 1..${MAX_DEADLINE_MS}`;
    return n;
  }

  private respond(op: string, msg: ServiceMsg, r: OpResult, enc: 'json' | 'etf', t0: number): void {
    let reply = encodeReply(r, enc);
    if (msg.reply) {
      try {
        msg.respond(reply.body, { headers: reply.headers });
      } catch (err) {
        // Typically a reply above the server's max_payload: tell the caller instead of letting it time out.
        this.log.warn({ err: (err as Error).message, op, bytes: reply.body.length }, 'NATS reply not sent');
        if (reply.error === undefined) {
          reply = encodeReply({ ok: false, reason: 'internal', message: `reply of ${reply.body.length} bytes could not be sent: ${(err as Error).message}` }, enc);
          try {
            msg.respond(reply.body, { headers: reply.headers });
          } catch {
            /* connection gone: the caller times out */
          }
        }
      }
    }
    const f = this.endpointFigures.get(op);
    if (f !== undefined) {
      // The library already counted this request and the synchronous part of its time.
      f.processing_time += Math.round((performance.now() - t0) * 1e6);
      f.average_processing_time = f.num_requests > 0 ? Math.round(f.processing_time / f.num_requests) : 0;
      if (reply.error !== undefined) f.countError(new Error(`${reply.error.code}:${reply.error.reason}: ${reply.error.message}`));
    }
    if (reply.error !== undefined) this.counts.errors++;
  }

  figures(): TermObject {
    return record({
      connected: this.connected,
      serving: this.service !== undefined && this.stopping === undefined,
      in_flight: this.inFlight.size,
      expired_running: this.inFlight.lingeringSize,
      ...this.counts,
      jetstream: this.tracking !== undefined ? record({ ...this.tracking.figures }) : null,
    });
  }

  stop(): Promise<void> {
    if (this.stopping !== undefined) return this.stopping;
    this.stopping = (async () => {
      const nc = await Promise.race([this.connection.catch(() => undefined), new Promise<undefined>((r) => setTimeout(() => r(undefined), 50))]);
      this.log.info({ in_flight: this.inFlight.size }, 'NATS peer mode draining');
      // Unsubscribe (drain) first: new requests go to other instances from now on.
      if (this.service !== undefined) await withTimeout(this.service.stop(), 2000).catch(() => undefined);
      this.drained = true;
      // Let requests in flight finish; abort them after drainMs.
      await this.inFlight.drain(this.opts.drainMs ?? 5000, 1000);
      await this.tracking?.stop();
      // The connection is the engine's: flushed here, closed by the engine.
      if (nc !== undefined && !nc.isClosed()) await withTimeout(nc.flush(), 1000).catch(() => undefined);
      this.log.info('NATS peer mode stopped');
    })();
    return this.stopping;
  }
}

