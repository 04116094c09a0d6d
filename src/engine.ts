/**
 * The engine: configuration, logger, event bus, and the lazily started
 * services every part registers (cache, templates, store, scorer, ...).
 *
 * Parts do not import each other's internals through here: each part adds
 * its service type to `Services` by module augmentation and registers a
 * factory with `defineService`. The engine starts a service on first use
 * (so the Port's ready handshake is not held up by PGlite's first open)
 * and closes services in reverse start order on shutdown.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { TermObject } from './codec/terms.js';
import type { EngineConfig } from './config.js';

/** Augmented by each part: `declare module '../engine.js' { interface Services { store: TrackingStore } }`. */
// eslint-disable-next-line @typescript-eslint/no-empty-interface
export interface Services {}

export interface ServiceDefinition<T> {
  create(engine: Engine): Promise<T> | T;
  /** Flush and release. Called once, on shutdown, for services that were started. */
  close?(service: T): Promise<void> | void;
  /** Figures for `stats`. */
  stats?(service: T): TermObject | Promise<TermObject>;
  /** Names of services this one needs started first (for close order). */
}

const definitions = new Map<string, ServiceDefinition<unknown>>();

export function defineService<K extends keyof Services & string>(name: K, def: ServiceDefinition<Services[K]>): void {
  definitions.set(name, def as ServiceDefinition<unknown>);
}

export interface EngineEvent {
  name: string;
  payload: TermObject;
}

export class Engine {
  readonly startedAt = Date.now();
  /** 'event' → EngineEvent: forwarded to the Port owner as `{:event, name, payload}`. */
  readonly events = new EventEmitter();
  private readonly started = new Map<string, Promise<unknown>>();
  private readonly startOrder: string[] = [];
  private closing = false;

  constructor(
    readonly config: EngineConfig,
    readonly log: Logger,
  ) {
    this.events.setMaxListeners(100);
  }

  /** The named service, started on first call. Concurrent first calls share one start. */
  service<K extends keyof Services & string>(name: K): Promise<Services[K]> {
    let p = this.started.get(name);
    if (p === undefined) {
      if (this.closing) return Promise.reject(new Error(`engine is shutting down; ${name} not started`));
      const def = definitions.get(name);
      if (def === undefined) return Promise.reject(new Error(`no service named ${name} is registered`));
      p = Promise.resolve().then(() => def.create(this));
      this.started.set(name, p);
      p.then(
        () => this.startOrder.push(name),
        (err: unknown) => {
          // A failed start may be retried by the next caller (e.g. the database came back).
          this.started.delete(name);
          this.log.error({ err, service: name }, 'service failed to start');
        },
      );
    }
    return p as Promise<Services[K]>;
  }

  /** The service if it is already started, else undefined (for stats without side effects). */
  async startedService<K extends keyof Services & string>(name: K): Promise<Services[K] | undefined> {
    if (!this.startOrder.includes(name)) return undefined;
    return (await this.started.get(name)) as Services[K];
  }

  emit(name: string, payload: TermObject): void {
    this.events.emit('event', { name, payload } satisfies EngineEvent);
  }

  private readonly figureSources = new Map<string, () => TermObject>();

  /** Figures of something that is not a service (a transport's queue depths) for `stats`. */
  registerFigures(name: string, source: () => TermObject): void {
    this.figureSources.set(name, source);
  }

  async serviceStats(): Promise<Record<string, TermObject>> {
    const out: Record<string, TermObject> = {};
    for (const [name, source] of this.figureSources) out[name] = source();
    for (const name of this.startOrder) {
      const def = definitions.get(name);
      if (def?.stats === undefined) continue;
      try {
        out[name] = await def.stats(await this.started.get(name));
      } catch (err) {
        this.log.warn({ err, service: name }, 'stats failed');
      }
    }
    return out;
  }

  get startedServices(): readonly string[] {
    return this.startOrder;
  }

  /** Close started services in reverse start order; waits for services still starting. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    await Promise.allSettled([...this.started.values()]);
    for (const name of [...this.startOrder].reverse()) {
      const def = definitions.get(name);
      try {
        await def?.close?.(await this.started.get(name));
      } catch (err) {
        this.log.error({ err, service: name }, 'service failed to close');
      }
    }
  }
}
