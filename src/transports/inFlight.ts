/**
 * The one registry of requests in flight, shared by every transport (Port,
 * NATS service, JetStream tracking consumer): start a piece of work under a
 * key with its own AbortSignal, cancel it by key, count it, and drain —
 * wait for everything to finish, aborting what still runs after a grace
 * period. Keeping this in one place keeps drain semantics identical across
 * transports.
 *
 * It also holds each connection's limit: a registry is made with the most
 * requests it may run at once (`PROMPT_ENGINE_PORT_MAX_IN_FLIGHT` per Port
 * connection, `PROMPT_ENGINE_NATS_MAX_IN_FLIGHT` per NATS instance); a
 * transport asks `full` before it starts one more and answers `overloaded()`
 * (`{:error, {:overloaded, "..."}}`) instead, so what a client can make grow
 * here is bounded and the error names the setting.
 */
import type { Logger } from 'pino';
import type { OpContext } from '../ops/types.js';
import type { AppEngine } from '../services.js';

/**
 * A request's cancellation, created lazily: most ops never look at their
 * AbortSignal, and an AbortController (an EventTarget) per request was the
 * largest single cost of a small request (BENCHMARKS.md, Hot-path goals:
 * Port and NATS, per request). `signal` creates it on
 * first use, already aborted if the request was cancelled before.
 */
export class Cancellation {
  private ctl: AbortController | undefined;
  private abortedEarly = false;

  get signal(): AbortSignal {
    if (this.ctl === undefined) {
      this.ctl = new AbortController();
      if (this.abortedEarly) this.ctl.abort();
    }
    return this.ctl.signal;
  }

  get aborted(): boolean {
    return this.ctl !== undefined ? this.ctl.signal.aborted : this.abortedEarly;
  }

  abort(): void {
    if (this.ctl !== undefined) this.ctl.abort();
    else this.abortedEarly = true;
  }
}

/**
 * The OpContext of a request run under a Cancellation: its signal is made
 * only when an op reads it. A class rather than an object literal with a
 * getter per request (an accessor pair and two closures each; BENCHMARKS.md,
 * Hot-path goals).
 */
export class RequestContext implements OpContext {
  constructor(
    private readonly cancellation: Cancellation,
    readonly engine: AppEngine,
    readonly log: Logger,
    readonly transport: string,
  ) {}

  get signal(): AbortSignal {
    return this.cancellation.signal;
  }

  /** A method, called as `ctx.cancelled()` (OpContext's cheap check). */
  cancelled(): boolean {
    return this.cancellation.aborted;
  }
}

interface Entry {
  readonly ctl: Cancellation;
  readonly done: Promise<unknown>;
}

export class InFlight<K> {
  private readonly entries = new Map<K, Entry>();
  /** Expired work that has not stopped yet (an op that does not read its signal): it holds a slot until it settles or its hold ends. */
  private readonly lingering = new Map<Cancellation, NodeJS.Timeout>();
  private readonly waiters: Array<() => void> = [];
  private nextKey = 0;

  /**
   * `limit`: the most requests this registry runs at once, and `setting`, the
   * variable that sets it (named in the `overloaded` message).
   */
  constructor(
    readonly limit = Infinity,
    private readonly setting = '',
  ) {}

  get size(): number {
    return this.entries.size;
  }

  /** At the limit (work expired but still running counts): the next request gets `overloaded()` instead of a slot. */
  get full(): boolean {
    return this.entries.size + this.lingering.size >= this.limit;
  }

  /** Expired work still running (see `expire`). */
  get lingeringSize(): number {
    return this.lingering.size;
  }

  /** The reply to a request refused because the registry is full. */
  overloaded(): { ok: false; reason: 'overloaded'; message: string } {
    return { ok: false, reason: 'overloaded', message: `${this.limit} requests already in flight on this connection (${this.setting}); retry when some have answered` };
  }

  has(key: K): boolean {
    return this.entries.has(key);
  }

  /**
   * Run `work` under `key`; the entry lives until the work settles. The
   * returned promise is the work's own (callers attach their reply to it).
   */
  start<T>(key: K, work: (cancellation: Cancellation) => Promise<T>): Promise<T> {
    if (this.entries.has(key)) throw new Error(`key ${String(key)} is already in flight`);
    const ctl = new Cancellation();
    let done: Promise<T>;
    try {
      done = work(ctl);
    } catch (err) {
      // Work that throws before it returns its promise fails like work that rejects.
      done = Promise.reject(err);
    }
    this.entries.set(key, { ctl, done });
    const settle = (): void => {
      if (this.entries.get(key)?.ctl !== ctl) return; // expired already
      this.entries.delete(key);
      this.wake();
    };
    done.then(settle, settle);
    return done;
  }

  /** A fresh numeric key for transports whose requests carry no id of their own. */
  key(): number {
    return this.nextKey++;
  }

  /** Abort one request; false when no such key is in flight. */
  cancel(key: K): boolean {
    const e = this.entries.get(key);
    if (e === undefined) return false;
    e.ctl.abort();
    return true;
  }

  /**
   * Give up on one request: abort its work and take it out of flight (its
   * late result is ignored). Work that does not stop at the abort (an op
   * that never reads its signal) keeps its slot until it settles, at most
   * `holdMs`: a caller that asks for a 1 ms deadline cannot start more
   * work at once than the limit, and work that never ends holds its slot
   * only that long.
   */
  expire(key: K, holdMs = 0): boolean {
    const e = this.entries.get(key);
    if (e === undefined) return false;
    e.ctl.abort();
    this.entries.delete(key);
    if (holdMs > 0) {
      const release = (): void => {
        const t = this.lingering.get(e.ctl);
        if (t === undefined) return;
        clearTimeout(t);
        this.lingering.delete(e.ctl);
        this.wake();
      };
      this.lingering.set(e.ctl, setTimeout(release, holdMs).unref());
      e.done.then(release, release);
    } else this.wake();
    return true;
  }

  /** A slot came free: whoever waits in `below` looks again. */
  private wake(): void {
    if (this.waiters.length > 0) for (const w of this.waiters.splice(0)) w();
  }

  abortAll(): void {
    for (const e of this.entries.values()) e.ctl.abort();
  }

  /** Resolves once fewer than `n` requests are in flight (a concurrency limit). */
  async below(n: number): Promise<void> {
    while (this.entries.size >= n) await new Promise<void>((r) => this.waiters.push(r));
  }

  /**
   * Wait for everything in flight. After `graceMs` what still runs is
   * aborted; aborted work gets `afterAbortMs` to answer, then drain returns
   * regardless.
   */
  async drain(graceMs: number, afterAbortMs = 100): Promise<void> {
    if (this.entries.size === 0) return;
    const all = (): Promise<unknown> => Promise.allSettled([...this.entries.values()].map((e) => e.done));
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<'expired'>((r) => (timer = setTimeout(() => r('expired'), graceMs)));
    const first = await Promise.race([all(), expired]);
    clearTimeout(timer);
    if (first !== 'expired') return;
    this.abortAll();
    await Promise.race([all(), new Promise((r) => setTimeout(r, afterAbortMs).unref())]);
  }
}
