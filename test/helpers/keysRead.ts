/**
 * The keys an op's validation reads from its arguments, present or not,
 * recorded through a Proxy (the ops suite checks they are all declared; the
 * validation suite derives its cases from them).
 */
import type { TermObject } from '../../src/codec/terms.js';
import { validateArgs, type OpSpec } from '../../src/ops/types.js';

/** `untilFailure`: arguments the validation refuses are fine, and the keys read before the refusal count. */
export function keysRead(spec: OpSpec<unknown>, args: TermObject, opts: { untilFailure?: boolean } = {}): Set<string> {
  const seen = new Set<string>();
  const note = (k: string | symbol): void => void (typeof k === 'string' && seen.add(k));
  const proxy = new Proxy(args, {
    get: (t, k, r) => (note(k), Reflect.get(t, k, r)),
    has: (t, k) => (note(k), Reflect.has(t, k)),
    getOwnPropertyDescriptor: (t, k) => (note(k), Reflect.getOwnPropertyDescriptor(t, k)),
  });
  try {
    validateArgs(spec, proxy);
  } catch (err) {
    if (opts.untilFailure !== true) throw err;
  }
  return seen;
}
