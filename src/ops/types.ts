/**
 * The shape of an op: `{name, validate, handle}`. Transports (Port, NATS)
 * look ops up in one table and never know what an op does; ops never know
 * which transport called them.
 */
import type { Logger } from 'pino';
import type { Json } from '../codec/json.js';
import type { Term, TermObject } from '../codec/terms.js';
import type { ErrorReason } from '../contract/errors.js';
import { readArgs, type ArgSchema, type ArgsOf } from '../contract/schema.js';
import type { AppEngine } from '../services.js';

export interface OpContext {
  /** Aborted when the caller cancels (`{:cancel, id}`), times out, or the sidecar drains. */
  readonly signal: AbortSignal;
  /** Cheaper than `signal.aborted` where the transport creates the signal lazily. */
  readonly cancelled?: () => boolean;
  readonly engine: AppEngine;
  readonly log: Logger;
  /** Which transport carried the request: 'port' | 'nats' | 'local'. */
  readonly transport: string;
}

export interface OpSpec<A = unknown, S extends ArgSchema = ArgSchema> {
  readonly name: string;
  /** One line for `describe` and docs/ops.md. */
  readonly summary: string;
  /**
   * Every argument the op reads. The table rejects any other key before
   * anything else runs (see contract/schema.ts), and `describe` / docs/ops.md
   * print this. Typed specs (contract/schema.ts's constructors) are read by
   * the table itself: their bounds, defaults and errors live only here.
   */
  readonly args: S;
  /** Accept keys beyond `args` (`echo` returns whatever it is given). */
  readonly openArgs?: boolean;
  /** The `{:ok, reply}` shape, for people (Elixir notation). */
  readonly reply: string;
  /** Errors particular to this op and when they happen; every op may also fail with the reasons of `COMMON_ERRORS`. */
  readonly errors?: Readonly<Partial<Record<ErrorReason, string>>>;
  /** Valid argument maps (JSON): shown in the docs, and run through validation by the ops test. */
  readonly examples?: readonly Json[];
  /**
   * Set when the op records a tracking entry of this kind: a transport with
   * a durable log (JetStream in NATS peer mode) may store the validated
   * args there first and run the op from the log.
   */
  readonly durableKind?: string;
  /**
   * Typed ops: the rules across arguments (`prompt` or `template_id`, not
   * both), on what `readArgs` read; absent, the read arguments are the op's.
   */
  refine?(read: ArgsOf<S>, raw: TermObject): A;
  /**
   * Ops written in plain JS (a test fixture, an extension) may read their
   * raw map themselves, throwing `OpError('bad_request', 'field: expected ...')`.
   * Every op of the engine uses typed specs and `refine` instead.
   */
  validate?(args: TermObject): A;
  handle(args: A, ctx: OpContext): Promise<Term>;
}

/** An op with typed argument specs: the table reads them; `refine` (if any) adds the rules across arguments. */
export function typedOp<S extends ArgSchema, A = ArgsOf<S>>(spec: Omit<OpSpec<A, S>, 'validate'>): OpSpec<unknown> {
  return spec as unknown as OpSpec<unknown>;
}

/** What the op's handler gets from raw arguments: typed specs read (and refined), or the op's own `validate`. */
export function validateArgs<A>(spec: OpSpec<A>, raw: TermObject): A {
  if (spec.validate !== undefined) return spec.validate(raw);
  const read = readArgs(raw, spec.args);
  return spec.refine !== undefined ? spec.refine(read, raw) : (read as unknown as A);
}
