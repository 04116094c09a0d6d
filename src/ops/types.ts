/**
 * The shape of an op: `{name, validate, handle}`. Transports (Port, NATS)
 * look ops up in one table and never know what an op does; ops never know
 * which transport called them.
 */
import type { Logger } from 'pino';
import type { Json } from '../codec/json.js';
import type { Term, TermObject } from '../codec/terms.js';
import type { ErrorReason } from '../contract/errors.js';
import type { ArgSchema } from '../contract/schema.js';
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

export interface OpSpec<A = unknown> {
  readonly name: string;
  /** One line for `describe` and docs/ops.md. */
  readonly summary: string;
  /**
   * Every argument the op reads. The table rejects any other key before
   * `validate` runs (see contract/schema.ts), and `describe` / docs/ops.md
   * print this: a key the validator reads must be declared here (the ops
   * test checks it against `examples`).
   */
  readonly args: ArgSchema;
  /** Accept keys beyond `args` (`echo` returns whatever it is given). */
  readonly openArgs?: boolean;
  /** The `{:ok, reply}` shape, for people (Elixir notation). */
  readonly reply: string;
  /** Errors particular to this op and when they happen; every op may also fail with the reasons of `COMMON_ERRORS`. */
  readonly errors?: Readonly<Partial<Record<ErrorReason, string>>>;
  /** Valid argument maps (JSON): shown in the docs, and run through `validate` by the ops test. */
  readonly examples?: readonly Json[];
  /**
   * Set when the op records a tracking entry of this kind: a transport with
   * a durable log (JetStream in NATS peer mode) may store the validated
   * args there first and run the op from the log.
   */
  readonly durableKind?: string;
  /** Throws `OpError('bad_request', 'field: expected ...')` on bad input. */
  validate(args: TermObject): A;
  handle(args: A, ctx: OpContext): Promise<Term>;
}

/** Define an op with the argument type inferred from `validate`. */
export function defineOp<A>(spec: OpSpec<A>): OpSpec<A> {
  return spec;
}
