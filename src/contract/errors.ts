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

export const badRequest = (field: string, expected: string): OpError =>
  new OpError('bad_request', `${field}: ${expected}`);
