/**
 * The shape of an op: `{name, validate, handle}`. Transports (Port, NATS)
 * look ops up in one table and never know what an op does; ops never know
 * which transport called them.
 */
import type { Logger } from 'pino';
import type { Term, TermObject } from '../codec/terms.js';
import type { Engine } from '../engine.js';

export interface OpContext {
  /** Aborted when the caller cancels (`{:cancel, id}`), times out, or the sidecar drains. */
  readonly signal: AbortSignal;
  readonly engine: Engine;
  readonly log: Logger;
  /** Which transport carried the request: 'port' | 'nats' | 'local'. */
  readonly transport: string;
}

export interface OpSpec<A = unknown> {
  readonly name: string;
  /** One line for `health`/docs. */
  readonly summary?: string;
  /** Throws `OpError('bad_request', 'field: expected ...')` on bad input. */
  validate(args: TermObject): A;
  handle(args: A, ctx: OpContext): Promise<Term>;
}

/** Define an op with the argument type inferred from `validate`. */
export function defineOp<A>(spec: OpSpec<A>): OpSpec<A> {
  return spec;
}

/**
 * An error an op reports to its caller as `{:error, {reason, message}}`.
 * `reason` must be one of the atoms the Elixir client knows (it decodes
 * with `[:safe]`): see `ERROR_REASONS`.
 */
export class OpError extends Error {
  constructor(
    readonly reason: ErrorReason,
    message: string,
  ) {
    super(message);
    this.name = 'OpError';
  }
}

/** Every reason atom the sidecar may send. The Elixir client references each of them. */
export const ERROR_REASONS = [
  'bad_request',
  'unknown_op',
  'not_found',
  'cancelled',
  'timeout',
  'unavailable',
  'overloaded',
  'conflict',
  'llm_error',
  'internal',
  'shutting_down',
  'insufficient_data',
] as const;
export type ErrorReason = (typeof ERROR_REASONS)[number];

export const badRequest = (field: string, expected: string): OpError =>
  new OpError('bad_request', `${field}: ${expected}`);
