/**
 * The op table: one registry of `{name, validate, handle}` shared by every
 * transport. `dispatch` validates, runs, and turns every failure into a
 * `{reason, message}` pair, so a bad request can never take the sidecar
 * down. It also keeps the per-op counters that `stats` reports.
 */
import { isTermObject, type Term, type TermObject } from '../codec/terms.js';
import { validateArgs, type OpContext, type OpSpec } from './types.js';
import { OpError, type ErrorReason } from '../contract/errors.js';
import { isTyped, keyCheck, rejectUnknownKeys, type KeyCheck } from '../contract/schema.js';

export type OpResult = { ok: true; value: Term } | { ok: false; reason: ErrorReason; message: string };

interface OpCounters {
  calls: number;
  errors: number;
  totalMs: number;
}

export class OpTable {
  private readonly ops = new Map<string, OpSpec<unknown>>();
  /** Each op's declared argument keys, as Sets (checked on every request before `validate`). */
  private readonly keyChecks = new Map<string, KeyCheck>();
  private readonly counters = new Map<string, OpCounters>();
  private inFlightCount = 0;

  constructor(specs: Iterable<OpSpec<unknown>> = []) {
    for (const s of specs) this.add(s);
  }

  add(spec: OpSpec<unknown>): this {
    if (this.ops.has(spec.name)) throw new Error(`op ${spec.name} is defined twice`);
    // Ops from plain JS (test fixtures, extensions) are not type-checked: say what is missing.
    if (spec.args === undefined || spec.args === null) throw new Error(`op ${spec.name} declares no args (give args: {} for none)`);
    if (spec.validate === undefined && !isTyped(spec.args))
      throw new Error(`op ${spec.name}: arguments ${Object.keys(spec.args).filter((k) => spec.args[k]!.read === undefined && spec.args[k]!.aliasOf === undefined).join(', ')} are declared without a type (use contract/schema.ts's constructors, or give the op a validate)`);
    this.ops.set(spec.name, spec);
    this.keyChecks.set(spec.name, keyCheck(spec.name, spec.args, { open: spec.openArgs }));
    return this;
  }

  get names(): string[] {
    return [...this.ops.keys()].sort();
  }

  /** Every op's spec, by name (for `describe` and the docs). */
  get specs(): OpSpec<unknown>[] {
    return this.names.map((n) => this.ops.get(n)!);
  }

  has(name: string): boolean {
    return this.ops.has(name);
  }

  /** The tracking kind an op records (see `OpSpec.durableKind`), if any. */
  durableKindOf(name: string): string | undefined {
    return this.ops.get(name)?.durableKind;
  }

  /** The op that records tracking entries of `kind`. */
  opOfDurableKind(kind: string): string | undefined {
    for (const spec of this.ops.values()) if (spec.durableKind === kind) return spec.name;
    return undefined;
  }

  get inFlight(): number {
    return this.inFlightCount;
  }

  async dispatch(name: string, args: Term, ctx: OpContext): Promise<OpResult> {
    const spec = this.ops.get(name);
    if (spec === undefined) return { ok: false, reason: 'unknown_op', message: `no op named ${JSON.stringify(name)}; known: ${this.names.join(', ')}` };
    const c = this.counter(name);
    c.calls++;
    this.inFlightCount++;
    const t0 = performance.now();
    try {
      if (!isTermObject(args)) throw new OpError('bad_request', 'args: expected a map');
      rejectUnknownKeys(args as TermObject, this.keyChecks.get(name)!);
      const valid = validateArgs(spec, args as TermObject);
      if (ctx.cancelled !== undefined ? ctx.cancelled() : ctx.signal.aborted) throw new OpError('cancelled', 'request was cancelled before it started');
      const value = await spec.handle(valid, ctx);
      return { ok: true, value };
    } catch (err) {
      c.errors++;
      return toErrorResult(err, ctx);
    } finally {
      this.inFlightCount--;
      c.totalMs += performance.now() - t0;
    }
  }

  /**
   * Validate args without running the op (the NATS transport checks a
   * tracking entry before it enters the JetStream stream). Undefined = valid.
   */
  check(name: string, args: Term): Extract<OpResult, { ok: false }> | undefined {
    const spec = this.ops.get(name);
    if (spec === undefined) return { ok: false, reason: 'unknown_op', message: `no op named ${JSON.stringify(name)}` };
    try {
      if (!isTermObject(args)) throw new OpError('bad_request', 'args: expected a map');
      rejectUnknownKeys(args as TermObject, this.keyChecks.get(name)!);
      validateArgs(spec, args as TermObject);
      return undefined;
    } catch (err) {
      if (err instanceof OpError) return { ok: false, reason: err.reason, message: err.message };
      return { ok: false, reason: 'bad_request', message: err instanceof Error ? err.message : String(err) };
    }
  }

  stats(): Record<string, OpCounters> {
    return Object.fromEntries(this.counters);
  }

  private counter(name: string): OpCounters {
    let c = this.counters.get(name);
    if (c === undefined) this.counters.set(name, (c = { calls: 0, errors: 0, totalMs: 0 }));
    return c;
  }
}

export function toErrorResult(err: unknown, ctx: Pick<OpContext, 'signal' | 'log'>): OpResult {
  if (err instanceof OpError) return { ok: false, reason: err.reason, message: err.message };
  if (ctx.signal.aborted || (err instanceof Error && err.name === 'AbortError'))
    return { ok: false, reason: 'cancelled', message: 'request was cancelled' };
  ctx.log.error({ err }, 'op failed');
  const message = err instanceof Error ? err.message : String(err);
  return { ok: false, reason: 'internal', message };
}
