/**
 * Layer: core (imports codec types and config only). The engine is a typed
 * container: configuration, logger, event bus, and the services it was
 * built with, each started on first use (so the Port's ready handshake is
 * not held up by PGlite's first open) or eagerly by `start`, and closed in
 * reverse declaration order by whoever owns the engine (the entry point):
 * services are declared after what they use, and a service may start what
 * it uses lazily, after itself (the closed loop scores its first proposals
 * long after it started), so start order is not the order to close in.
 *
 * The engine knows no service by name: `services.ts` is the one place that
 * lists them and builds an `Engine<Services>`. Services live on the
 * instance, so two engines in one process share nothing.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { TermObject } from './codec/terms.js';
import type { EngineConfig } from './config.js';

export interface ServiceDefinition<S, T> {
  create(engine: Engine<S>): Promise<T> | T;
  /** Flush and release. Called once, on close, for services that were started. */
  close?(service: T): Promise<void> | void;
  /** Figures for `stats`. */
  stats?(service: T): TermObject | Promise<TermObject>;
}

export type ServiceDefinitions<S> = { readonly [K in keyof S]: ServiceDefinition<S, S[K]> };

export interface EngineEvent {
  name: string;
  payload: TermObject;
}

/** A service asked for while the engine shuts down: expected then, and not worth a warning (work in flight just stops). */
export class ShuttingDownError extends Error {
  constructor(service: string) {
    super(`engine is shutting down; ${service} not started`);
    this.name = 'ShuttingDownError';
  }
}

export class Engine<S = Record<string, never>> {
  readonly startedAt = Date.now();
  /** This engine's name among the sidecars sharing a database or a NATS queue group (host, pid, and a random part). */
  readonly instanceId = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  /** 'event' → EngineEvent: forwarded to the Port owner as `{:event, name, payload}`. */
  readonly events = new EventEmitter();
  private readonly started = new Map<keyof S, Promise<unknown>>();
  private readonly startOrder: Array<keyof S> = [];
  private readonly figureSources = new Map<string, () => TermObject>();
  /** Why a service's last start failed, until it starts (for `health`: a failed start is not "not started"). */
  private readonly failures = new Map<keyof S, Error>();
  private closing = false;

  constructor(
    readonly config: EngineConfig,
    readonly log: Logger,
    private readonly definitions: ServiceDefinitions<S>,
  ) {
    this.events.setMaxListeners(100);
  }

  /** The named service, started on first call. Concurrent first calls share one start; a failed start is retried by the next caller. */
  service<K extends keyof S & string>(name: K): Promise<S[K]> {
    let p = this.started.get(name) as Promise<S[K]> | undefined;
    if (p === undefined) {
      if (this.closing) return Promise.reject(new ShuttingDownError(name));
      const def = this.definitions[name];
      const started = Promise.resolve().then(() => def.create(this));
      p = started;
      this.started.set(name, started);
      started.then(
        () => {
          this.failures.delete(name);
          this.startOrder.push(name);
        },
        (err: unknown) => {
          this.started.delete(name);
          this.failures.set(name, err instanceof Error ? err : new Error(String(err)));
          this.log.error({ err, service: name }, 'service failed to start');
        },
      );
    }
    return p;
  }

  /** Why the last start of `name` failed, if it failed and has not started since. */
  startFailure<K extends keyof S & string>(name: K): Error | undefined {
    return this.failures.get(name);
  }

  /** The service if it has started, else undefined (for stats and events without side effects). */
  async startedService<K extends keyof S & string>(name: K): Promise<S[K] | undefined> {
    if (!this.startOrder.includes(name)) return undefined;
    return (await this.started.get(name)) as S[K];
  }

  emit(name: string, payload: TermObject): void {
    this.events.emit('event', { name, payload } satisfies EngineEvent);
  }

  /** Figures of something that is not a service (a transport's queue depths) for `stats`. */
  registerFigures(name: string, source: () => TermObject): void {
    this.figureSources.set(name, source);
  }

  async serviceStats(): Promise<Record<string, TermObject>> {
    const out: Record<string, TermObject> = {};
    for (const [name, source] of this.figureSources) out[name] = source();
    for (const name of this.startOrder) {
      const def = this.definitions[name];
      if (def.stats === undefined) continue;
      try {
        out[String(name)] = await def.stats((await this.started.get(name)) as S[typeof name]);
      } catch (err) {
        this.log.warn({ err, service: name }, 'stats failed');
      }
    }
    return out;
  }

  get startedServices(): readonly string[] {
    return this.startOrder.map(String);
  }

  /** Close started services, users before what they use (reverse declaration order); waits for services still starting. Idempotent. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    await Promise.allSettled([...this.started.values()]);
    const declared = Object.keys(this.definitions) as Array<keyof S>;
    for (const name of declared.reverse().filter((n) => this.startOrder.includes(n))) {
      const def = this.definitions[name];
      try {
        await def.close?.((await this.started.get(name)) as S[typeof name]);
      } catch (err) {
        this.log.error({ err, service: name }, 'service failed to close');
      }
    }
  }
}
