/**
 * Layer: contract (imports codec only). The errors every layer above may
 * raise and every transport knows how to send: `OpError(reason, message)`
 * becomes `{:error, {reason, message}}` to the caller's id.
 */
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

/** Reasons any op may answer with, whatever it does (listed once in docs/ops.md rather than under every op). */
export const COMMON_ERRORS: Readonly<Partial<Record<ErrorReason, string>>> = {
  bad_request: 'an argument is missing, of the wrong type or out of range, or a key the op does not take (the message names it and lists the known keys)',
  unknown_op: 'no op of that name (the message lists the known ops)',
  cancelled: 'the caller cancelled the request, or the sidecar is draining',
  timeout: 'the deadline passed (a NATS request\'s deadline; on the Port the client times out and cancels)',
  overloaded: 'too many requests in flight on this connection (PROMPT_ENGINE_PORT_MAX_IN_FLIGHT per Port, PROMPT_ENGINE_NATS_MAX_IN_FLIGHT per NATS instance; the message says which)',
  shutting_down: 'the sidecar is stopping and takes no new work',
  internal: 'a bug: the message says what failed and the sidecar logs the stack',
};

export const badRequest = (field: string, expected: string): OpError =>
  new OpError('bad_request', `${field}: ${expected}`);
