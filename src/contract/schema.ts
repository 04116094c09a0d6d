/**
 * Argument schemas: what an op (or a tracking entry) accepts, declared once
 * as data, and everything derived from that one declaration:
 *
 * - the key check: the op table refuses a key the schema does not declare
 *   before anything else runs (a typo such as `bredth:` is a `bad_request`
 *   naming it and the nearest known key, never a silent default);
 * - reading: a typed spec (made by the constructors below: `string`,
 *   `integer`, `number`, `boolean`, `oneOf`, `listOf`, `record`,
 *   `stringMap`, `variables`, `anyTerm`, `either`) carries its bounds,
 *   default and reader, and `readArgs` reads a whole map by them with the
 *   readers of args.ts — so a limit is written once, in the spec, and the
 *   error names the field (`breadth: expected an integer in 1..50`);
 * - the words people read: `type` (`integer 1..50`) is made from the same
 *   bounds, and `describe`, `prompt-engine ops`, docs/ops.md and the CLI's
 *   flags (cli/verbs.ts) print the spec.
 *
 * A spec written as a plain object (`{type, doc}` with no reader) is only
 * declared: its op reads it itself (see contract/README.md). Every op and
 * tracking entry now uses the constructors. May import: codec.
 */
import { isTermObject, newMap, type Term, type TermObject } from '../codec/terms.js';
import type { Json } from '../codec/json.js';
import { asBool, asInt, asList, asNumber, asString, asTimestamp, nowIso, numberMap as readNumberMap, requireMap, storableTerm, stringMap as readStringMap } from './args.js';
import { badRequest } from './errors.js';

/** What a typed argument holds, as data: what the CLI, the docs and the tests derive from. */
export type Shape =
  | { readonly kind: 'string'; readonly min?: number; readonly max?: number }
  | { readonly kind: 'integer'; readonly min?: number; readonly max?: number }
  | { readonly kind: 'number'; readonly min?: number; readonly max?: number }
  | { readonly kind: 'boolean' }
  | { readonly kind: 'enum'; readonly values: readonly string[] }
  | { readonly kind: 'list'; readonly of: Shape; readonly min?: number; readonly max?: number }
  | { readonly kind: 'record'; readonly keys: ArgSchema }
  | { readonly kind: 'string_map'; readonly maxEntries: number; readonly maxBytes: number }
  | { readonly kind: 'number_map'; readonly maxEntries: number }
  /** ISO-8601 text or integer unix milliseconds. */
  | { readonly kind: 'timestamp' }
  /** Any map whose text (every string and key, at any depth) must be storable: template variables, options passed on. */
  | { readonly kind: 'variables' }
  /** Any term, kept as given and never stored as text (cache_put's value). */
  | { readonly kind: 'any' }
  | { readonly kind: 'either'; readonly of: readonly Shape[] };

/** How present a read argument is: always (required, or defaulted), or maybe. */
export type Presence = 'always' | 'maybe';

export interface ArgSpec<T = unknown, P extends Presence = Presence> {
  /** For people: `integer 1..50`, `string`, `map of string → string`, `one of: a, b`. Typed specs make it from `shape`. */
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
  /** Typed specs: what the value is. Absent: declared only (its op reads it). */
  readonly shape?: Shape;
  /** Typed specs: read a present value (not nil), or throw `bad_request` naming `field`. */
  readonly read?: (v: Term, field: string) => T;
  /** The value when the key is absent (typed specs with a default). */
  readonly fallback?: () => T;
  /** Type-level only: whether the read argument is always there. */
  readonly presence?: P;
}

export type ArgSchema = Readonly<Record<string, ArgSpec>>;

type ValueOf<A> = A extends ArgSpec<infer T, Presence> ? T : unknown;
type AlwaysKeys<S> = { [K in keyof S]: S[K] extends { aliasOf: string } ? never : S[K] extends ArgSpec<unknown, infer P> ? (P extends 'always' ? K : never) : never }[keyof S];
type MaybeKeys<S> = Exclude<{ [K in keyof S]: S[K] extends { aliasOf: string } ? never : K }[keyof S], AlwaysKeys<S>>;

/** The arguments `readArgs` returns for a schema: each typed key with its value's type (optional when it may be absent). */
export type ArgsOf<S extends ArgSchema> = { -readonly [K in AlwaysKeys<S>]: ValueOf<S[K]> } & { -readonly [K in MaybeKeys<S>]?: ValueOf<S[K]> };

interface Common<T> {
  /** For people; may be empty for an item of a list. */
  readonly doc?: string;
  readonly required?: boolean;
  readonly requiredWhen?: string;
  readonly default?: T;
}
type PresenceOf<O> = O extends { required: true } ? 'always' : O extends { default: unknown } ? 'always' : 'maybe';

const range = (min: number | undefined, max: number | undefined, unit = ''): string =>
  min !== undefined && max !== undefined ? `${min}..${max}${unit}` : max !== undefined ? `at most ${max}${unit}` : min !== undefined ? `≥ ${min}${unit}` : '';

/** The words for a shape (what `type` says). */
export function typeText(s: Shape): string {
  switch (s.kind) {
    case 'string': {
      const r = range(s.min, s.max, ' characters');
      return r === '' ? 'string' : `string (${r})`;
    }
    case 'integer':
    case 'number': {
      const r = s.min !== undefined && s.max !== undefined ? `${s.min}..${s.max}` : range(s.min, s.max);
      return r === '' ? s.kind : `${s.kind} ${r}`;
    }
    case 'boolean':
      return 'boolean';
    case 'enum':
      return `one of: ${s.values.join(', ')}`;
    case 'list': {
      const bounds = [range(s.min, s.max)];
      let item: string;
      if (s.of.kind === 'string') {
        item = 'strings';
        bounds.push(s.of.min === undefined && s.of.max === undefined ? '' : `each ${range(s.of.min, s.of.max, ' characters')}`);
      } else if (s.of.kind === 'record') item = `%{${Object.entries(s.of.keys).map(([k, v]) => `${k}: ${v.type}`).join(', ')}}`;
      else item = typeText(s.of);
      const b = bounds.filter((x) => x !== '').join('; ');
      return `list of ${item}${b === '' ? '' : ` (${b})`}`;
    }
    case 'record':
      return 'map';
    case 'string_map':
      return `map of string → string (at most ${s.maxEntries} entries, ${s.maxBytes / 1024} KiB)`;
    case 'number_map':
      return `map of string → number (at most ${s.maxEntries} entries)`;
    case 'timestamp':
      return 'ISO-8601 string or integer unix ms';
    case 'variables':
      return 'map';
    case 'any':
      return 'any term';
    case 'either':
      return s.of.map(typeText).join(', or ');
  }
}

/** What a missing required argument should have been, as the readers of args.ts say it (`a string`, `an integer in 1..50`). */
export function requiredText(s: Shape): string {
  switch (s.kind) {
    case 'string':
      return 'a string';
    case 'integer':
      return s.min === undefined && s.max === undefined ? 'an integer' : `an integer in ${s.min ?? '-inf'}..${s.max ?? 'inf'}`;
    case 'number':
      return 'a number';
    case 'boolean':
      return 'a boolean';
    case 'enum':
      return `one of ${s.values.join(', ')}`;
    case 'list':
      return 'a list';
    case 'any':
      return 'any term';
    case 'timestamp':
      return 'an ISO-8601 timestamp or unix milliseconds';
    case 'either':
      return s.of.map(requiredText).join(' or ');
    default:
      return 'a map';
  }
}

function typed<T, P extends Presence>(shape: Shape, o: Common<T> & { readonly doc?: string }, read: (v: Term, field: string) => T, dflt?: () => T): ArgSpec<T, P> {
  const spec: { -readonly [K in keyof ArgSpec<T, P>]: ArgSpec<T, P>[K] } = { type: typeText(shape), doc: o.doc ?? '', shape, read };
  if (o.required === true) spec.required = true;
  if (o.requiredWhen !== undefined) spec.requiredWhen = o.requiredWhen;
  if (o.default !== undefined) {
    spec.default = o.default as unknown as Json;
    spec.fallback = dflt ?? ((): T => o.default as T);
  }
  if (shape.kind === 'record') spec.keys = shape.keys;
  return spec;
}

/**
 * A string (an atom is read as its name); storable text only (args.ts).
 * `pattern`: what it must match, and the words for it (`letters, digits, _ . : -`).
 */
export function string<O extends Common<string> & { readonly min?: number; readonly max?: number; readonly pattern?: { readonly re: RegExp; readonly says: string } }>(o: O): ArgSpec<string, PresenceOf<O>> {
  const spec = typed<string, PresenceOf<O>>({ kind: 'string', min: o.min, max: o.max }, o, (v, f) => {
    const s = asString(v, f, { min: o.min, max: o.max });
    if (o.pattern !== undefined && !o.pattern.re.test(s)) throw badRequest(f, `expected ${o.pattern.says}`);
    return s;
  });
  if (o.pattern === undefined) return spec;
  const r = range(o.min, o.max, ' characters');
  return { ...spec, type: `string (${o.pattern.says}${r === '' ? '' : `; ${r}`})` };
}

export function integer<O extends Common<number> & { readonly min?: number; readonly max?: number }>(o: O): ArgSpec<number, PresenceOf<O>> {
  return typed({ kind: 'integer', min: o.min, max: o.max }, o, (v, f) => asInt(v, f, { min: o.min, max: o.max }));
}

export function number<O extends Common<number> & { readonly min?: number; readonly max?: number }>(o: O): ArgSpec<number, PresenceOf<O>> {
  return typed({ kind: 'number', min: o.min, max: o.max }, o, (v, f) => asNumber(v, f, { min: o.min, max: o.max }));
}

export function boolean<O extends Common<boolean>>(o: O): ArgSpec<boolean, PresenceOf<O>> {
  return typed({ kind: 'boolean' }, o, asBool);
}

/** One of `values`, as an atom or a string; `normalize` first (`sparc_specification` → `specification`). */
export function oneOf<V extends string, O extends Common<V> & { readonly normalize?: (s: string) => string; readonly typeNote?: string }>(values: readonly V[], o: O): ArgSpec<V, PresenceOf<O>> {
  const spec = typed<V, PresenceOf<O>>({ kind: 'enum', values }, o, (v, f) => {
    let s = asString(v, f, { max: 200 });
    if (o.normalize !== undefined) s = o.normalize(s);
    if (!(values as readonly string[]).includes(s)) throw badRequest(f, `expected one of ${values.join(', ')}`);
    return s as V;
  });
  return o.typeNote === undefined ? spec : { ...spec, type: `${spec.type} ${o.typeNote}` };
}

/** A list of items read by `item` (a typed spec; its doc unused). */
export function listOf<T, O extends Common<T[]> & { readonly min?: number; readonly max?: number }>(item: ArgSpec<T>, o: O): ArgSpec<T[], PresenceOf<O>> {
  const readItem = item.read!;
  return typed({ kind: 'list', of: item.shape!, min: o.min, max: o.max }, o, (v, f) => {
    const items = asList(v, f, { max: o.max });
    if (o.min !== undefined && items.length < o.min) throw badRequest(f, `expected at least ${o.min} item${o.min === 1 ? '' : 's'}`);
    return items.map((x, i) => readItem(x, `${f}[${i}]`));
  });
}

/** A map with declared keys of its own (checked, and read by their specs). */
export function record<S extends ArgSchema, O extends Common<ArgsOf<S>>>(keys: S, o: O): ArgSpec<ArgsOf<S>, PresenceOf<O>> {
  return typed({ kind: 'record', keys }, o, (v, f) => readArgs(requireMap(v, f), keys, `${f}.`), () => readArgs(newMap(), keys));
}

/** A map of string → string (metadata, a context): entries and bytes bounded; atom and number values become text. */
export function stringMap<O extends Common<Record<string, string>> & { readonly maxEntries?: number; readonly maxBytes?: number }>(o: O): ArgSpec<Record<string, string>, PresenceOf<O>> {
  const maxEntries = o.maxEntries ?? 256;
  const maxBytes = o.maxBytes ?? 64 * 1024;
  return typed({ kind: 'string_map', maxEntries, maxBytes }, o, (v, f) => readStringMap(v, f, { maxEntries, maxBytes }), () => ({}));
}

/** A map of string → number (measured figures): entries bounded, keys storable. */
export function numberMap<O extends Common<Record<string, number>> & { readonly maxEntries?: number }>(o: O): ArgSpec<Record<string, number>, PresenceOf<O>> {
  const maxEntries = o.maxEntries ?? 256;
  return typed({ kind: 'number_map', maxEntries }, o, (v, f) => readNumberMap(v, f, { maxEntries }), () => ({}));
}

/** A moment, read as ISO-8601 text (UTC); `defaultNow`: absent means the time of the call. */
export function timestamp<O extends Omit<Common<string>, 'default'> & { readonly defaultNow?: boolean }>(o: O): ArgSpec<string, O extends { defaultNow: true } ? 'always' : PresenceOf<O>> {
  return typed({ kind: 'timestamp' }, o.defaultNow === true ? { ...o, default: 'now' } : o, asTimestamp, nowIso);
}

/** Any map (template variables, options passed on) whose every string and key is storable text. */
export function variables<O extends Common<TermObject>>(o: O): ArgSpec<TermObject, PresenceOf<O>> {
  return typed({ kind: 'variables' }, o, (v, f) => storableTerm(requireMap(v, f), f), () => newMap());
}

/** Any term, kept as it is (never stored as text). */
export function anyTerm<O extends Common<Term>>(o: O): ArgSpec<Term, PresenceOf<O>> {
  return typed({ kind: 'any' }, o, (v) => v);
}

/** One of several shapes, tried in order by the value's own type (a string, or a map). */
export function either<A, B, O extends Common<A | B>>(a: ArgSpec<A>, b: ArgSpec<B>, o: O): ArgSpec<A | B, PresenceOf<O>> {
  const fits = (s: Shape, v: Term): boolean =>
    s.kind === 'string' || s.kind === 'enum' ? typeof v === 'string' : s.kind === 'list' ? Array.isArray(v) : s.kind === 'integer' || s.kind === 'number' ? typeof v === 'number' || typeof v === 'bigint' : isTermObject(v);
  return typed({ kind: 'either', of: [a.shape!, b.shape!] }, o, (v, f) => {
    if (fits(a.shape!, v)) return a.read!(v, f);
    if (fits(b.shape!, v)) return b.read!(v, f);
    throw badRequest(f, `expected ${typeText({ kind: 'either', of: [a.shape!, b.shape!] })}`);
  });
}

/** Another name for `canonical` (older callers use it): read into `canonical` when that is absent. */
export function alias(canonical: string, doc: string, type: string): ArgSpec<never, 'maybe'> {
  return { type, doc, aliasOf: canonical };
}

const present = (o: TermObject, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k) && o[k] !== null && o[k] !== undefined;

interface ReadStep {
  readonly key: string;
  readonly spec: ArgSpec;
  /** Other names the caller may use for `key` (aliases). */
  readonly aliases: readonly string[];
  /** nil counts as absent, except for an `anyTerm` (nil is a term like any other there). */
  readonly nilIsValue: boolean;
}

/** The steps of reading a schema, made once per schema (requests run them on the hot path). */
const plans = new WeakMap<ArgSchema, readonly ReadStep[]>();
function planOf(schema: ArgSchema): readonly ReadStep[] {
  let plan = plans.get(schema);
  if (plan === undefined) {
    plan = Object.keys(schema)
      .filter((k) => schema[k]!.read !== undefined)
      .map((k) => ({ key: k, spec: schema[k]!, aliases: Object.keys(schema).filter((a) => schema[a]!.aliasOf === k), nilIsValue: schema[k]!.shape?.kind === 'any' }));
    plans.set(schema, plan);
  }
  return plan;
}

/**
 * Read `args` by `schema`'s typed specs: each present key by its reader,
 * each absent one as its default (or a `bad_request` when required), an
 * alias into its canonical key. Untyped specs are left to their op. `path`
 * prefixes field names (`llm.`).
 */
export function readArgs<S extends ArgSchema>(args: TermObject, schema: S, path = ''): ArgsOf<S> {
  const out: Record<string, unknown> = {};
  const plan = planOf(schema);
  for (let i = 0; i < plan.length; i++) {
    const { key: k, spec, aliases, nilIsValue } = plan[i]!;
    let key = k;
    if (aliases.length > 0 && !present(args, k)) for (const a of aliases) if (present(args, a)) key = a;
    if (present(args, key) || (nilIsValue && Object.prototype.hasOwnProperty.call(args, key))) out[k] = spec.read!(args[key]!, `${path}${key}`);
    else if (spec.required === true) throw badRequest(`${path}${k}`, `is required (${spec.shape === undefined ? spec.type : requiredText(spec.shape)})`);
    else if (spec.fallback !== undefined) out[k] = spec.fallback();
  }
  return out as ArgsOf<S>;
}

/** Every key of `schema` is typed (the op table reads it all by `readArgs`). */
export function isTyped(schema: ArgSchema): boolean {
  return Object.values(schema).every((s) => s.read !== undefined || s.aliasOf !== undefined);
}

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
