/**
 * Argument schemas: what an op (or a tracking entry) accepts, declared once
 * as data. The op table checks every request's keys against its op's schema
 * before the op's own readers run (so a typo such as `bredth:` is a
 * `bad_request` naming the key and listing the known ones, never a silent
 * default), and `describe`, `prompt-engine ops` and docs/ops.md are
 * generated from the same declarations. Types and ranges are still read by
 * the op's validator with the readers of args.ts; here they are text for
 * people. May import: codec.
 */
import { isTermObject, type TermObject } from '../codec/terms.js';
import type { Json } from '../codec/json.js';
import { badRequest } from './errors.js';

export interface ArgSpec {
  /** For people: `integer 1..50`, `string`, `map of string → string`, `one of: a, b`. */
  readonly type: string;
  readonly doc: string;
  /** Required in every call. */
  readonly required?: boolean;
  /** Required only in some calls: says when (`unless template_id is given`). */
  readonly requiredWhen?: string;
  /** What the op uses when the key is absent. */
  readonly default?: Json;
  /** This key is another name for `aliasOf` (older callers use it). */
  readonly aliasOf?: string;
  /** A map argument whose own keys are checked too (`llm: %{url: ...}`). */
  readonly keys?: ArgSchema;
}

export type ArgSchema = Readonly<Record<string, ArgSpec>>;

/** A schema made ready for the hot path: a Set lookup per key. */
export interface KeyCheck {
  readonly owner: string;
  readonly known: ReadonlySet<string>;
  /** Names in order for messages. */
  readonly names: readonly string[];
  /** Keys that are maps with their own schema. */
  readonly nested: ReadonlyArray<readonly [string, KeyCheck]>;
  /** Any key is accepted (`echo`); declared keys are still documented. */
  readonly open: boolean;
}

export function keyCheck(owner: string, schema: ArgSchema, opts: { open?: boolean } = {}): KeyCheck {
  const names = Object.keys(schema).sort();
  const nested = names.flatMap((k) => {
    const inner = schema[k]!.keys;
    return inner === undefined ? [] : [[k, keyCheck(`${owner} ${k}`, inner)] as const];
  });
  return { owner, known: new Set(names), names, nested, open: opts.open === true };
}

/**
 * Throws `bad_request` on the first key `check` does not know. `path` is the
 * prefix for nested maps (`llm.`). Cost: one Set lookup per key; nested maps
 * only when present.
 */
export function rejectUnknownKeys(o: TermObject, check: KeyCheck, path = ''): void {
  if (!check.open) {
    for (const k in o) if (!check.known.has(k)) throw unknownKey(k, check, path);
  }
  for (const [k, inner] of check.nested) {
    const v = o[k];
    if (v !== undefined && v !== null && isTermObject(v)) rejectUnknownKeys(v, inner, `${path}${k}.`);
  }
}

function unknownKey(key: string, check: KeyCheck, path: string): Error {
  const near = closest(key, check.names);
  const hint = near === undefined ? '' : ` (did you mean ${path}${near}?)`;
  const known = check.names.length === 0 ? 'it takes no arguments' : `known: ${check.names.join(', ')}`;
  return badRequest(`${path}${key}`, `unknown argument of ${check.owner}${hint}; ${known}`);
}

/** The known name nearest to a typo, if it is near enough to be the one meant. */
export function closest(key: string, names: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const n of names) {
    const d = editDistance(key, n);
    if (d < bestD) [best, bestD] = [n, d];
  }
  return bestD <= Math.max(2, Math.floor(key.length / 4)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 3) return Infinity;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}
