/**
 * The shape of an op: `{name, validate, handle}`. Transports (Port, NATS)
 * look ops up in one table and never know what an op does; ops never know
 * which transport called them.
 */
import type { Logger } from 'pino';
import type { Term, TermObject } from '../codec/terms.js';
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
  /** One line for `health`/docs. */
  readonly summary?: string;
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
