/**
 * Argument readers for op validators. Written by hand rather than with a
 * schema library because the input is Erlang-shaped: an enum may arrive as
 * an atom (Elixir) or a string (JSON over NATS), a float as an `ErlFloat`
 * or a number, a map with atom or binary keys. Every failure names the
 * field: `bad_request "breadth: expected an integer in 1..50"`.
 *
 * Every text that passes a reader can be stored: a string (or a map key)
 * holding U+0000 (PostgreSQL's text and jsonb refuse NUL) or a lone UTF-16
 * surrogate (no UTF-8 form; it arrives as a JSON `\ud800` escape) is a
 * `bad_request` naming the field here, at the edge, so no op and no writer
 * downstream ever sees one.
 */
import { Atom, ErlFloat, isTermObject, TermMap, Tuple, type Term, type TermObject } from '../codec/terms.js';
import { badRequest } from './errors.js';

export type Path = string;

const has = (o: TermObject, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k) && o[k] !== null && o[k] !== undefined;

export function requireMap(v: Term | undefined, field: Path): TermObject {
  if (v === undefined || !isTermObject(v)) throw badRequest(field, 'expected a map');
  return v as TermObject;
}

export function str(o: TermObject, k: string, opts: { max?: number; min?: number; path?: Path } = {}): string {
  const field = opts.path ?? k;
  if (!has(o, k)) throw badRequest(field, 'is required (a string)');
  return asString(o[k], field, opts);
}

export function optStr(o: TermObject, k: string, opts: { max?: number; min?: number; path?: Path } = {}): string | undefined {
  return has(o, k) ? asString(o[k], opts.path ?? k, opts) : undefined;
}

export function asString(v: Term | undefined, field: Path, opts: { max?: number; min?: number } = {}): string {
  let s: string;
  if (typeof v === 'string') s = v;
  else if (v instanceof Atom && v.name !== 'true' && v.name !== 'false') s = v.name;
  else throw badRequest(field, 'expected a string');
  const max = opts.max ?? 1_048_576 * 8;
  if (s.length > max) throw badRequest(field, `expected a string of at most ${max} characters`);
  if (opts.min !== undefined && s.length < opts.min) throw badRequest(field, `expected a string of at least ${opts.min} characters`);
  return storable(s, field);
}

/** Why `s` cannot be stored as text (PostgreSQL text/jsonb, UTF-8), or undefined when it can. */
export function unstorable(s: string): string | undefined {
  if (s.indexOf('\u0000') !== -1) return 'contains U+0000 (NUL), which text cannot hold';
  // One-byte strings (most) answer at once; a lone surrogate has no UTF-8 form.
  if (!(s as unknown as { isWellFormed(): boolean }).isWellFormed()) return 'contains a lone UTF-16 surrogate, which is not valid Unicode';
  return undefined;
}

/** `s` unchanged, or `bad_request` naming `field` when it cannot be stored (see the header). */
export function storable(s: string, field: Path): string {
  const why = unstorable(s);
  if (why !== undefined) throw badRequest(field, why);
  return s;
}

/** A map key as a field path names it: `metadata.model`, or `metadata["a b"]` when the key is not a plain name. */
export function keyPath(field: Path, key: string): Path {
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(key) ? `${field}.${key}` : `${field}[${JSON.stringify(key)}]`;
}

/** A map key that can be stored; the error names the map and shows the key escaped. */
export function storableKey(key: string, field: Path): string {
  const why = unstorable(key);
  if (why !== undefined) throw badRequest(field, `the key ${JSON.stringify(key)} ${why}`);
  return key;
}

/**
 * Any term whose text may reach storage or a prompt (template variables,
 * options passed on): every string and every map key in it, at any depth,
 * must be storable. Returns `v`; the error names the path (`variables.user.name`).
 */
export function storableTerm<T extends Term | undefined>(v: T, field: Path): T {
  if (typeof v === 'string') storable(v, field);
  else if (v instanceof Atom) storable(v.name, field);
  else if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) storableTerm(v[i], `${field}[${i}]`);
  } else if (v instanceof Tuple) {
    for (let i = 0; i < v.items.length; i++) storableTerm(v.items[i], `${field}[${i}]`);
  } else if (isTermObject(v)) {
    for (const k of Object.keys(v)) storableTerm((v as TermObject)[k], keyPath(field, storableKey(k, field)));
  } else if (v instanceof TermMap) {
    for (const [k, x] of v.entries) {
      storableTerm(k, `${field} (a key)`);
      storableTerm(x, `${field}[${typeof k === 'string' ? JSON.stringify(k) : '…'}]`);
    }
  }
  return v;
}

export function oneOf<T extends string>(o: TermObject, k: string, allowed: readonly T[], path?: Path): T {
  const field = path ?? k;
  if (!has(o, k)) throw badRequest(field, `is required (one of ${allowed.join(', ')})`);
  return asOneOf(o[k], field, allowed);
}

export function optOneOf<T extends string>(o: TermObject, k: string, allowed: readonly T[], path?: Path): T | undefined {
  return has(o, k) ? asOneOf(o[k], path ?? k, allowed) : undefined;
}

function asOneOf<T extends string>(v: Term | undefined, field: Path, allowed: readonly T[]): T {
  const s = v instanceof Atom ? v.name : typeof v === 'string' ? v : undefined;
  if (s === undefined || !(allowed as readonly string[]).includes(s)) throw badRequest(field, `expected one of ${allowed.join(', ')}`);
  return s as T;
}

export function asNumber(v: Term | undefined, field: Path, opts: { min?: number; max?: number } = {}): number {
  let n: number;
  if (typeof v === 'number') n = v;
  else if (v instanceof ErlFloat) n = v.value;
  else if (typeof v === 'bigint' && v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)) n = Number(v);
  else throw badRequest(field, 'expected a number');
  if (!Number.isFinite(n)) throw badRequest(field, 'expected a finite number');
  if ((opts.min !== undefined && n < opts.min) || (opts.max !== undefined && n > opts.max))
    throw badRequest(field, `expected a number in ${opts.min ?? '-inf'}..${opts.max ?? 'inf'}`);
  return n;
}

export function num(o: TermObject, k: string, opts: { min?: number; max?: number; path?: Path } = {}): number {
  if (!has(o, k)) throw badRequest(opts.path ?? k, 'is required (a number)');
  return asNumber(o[k], opts.path ?? k, opts);
}

export function optNum(o: TermObject, k: string, opts: { min?: number; max?: number; path?: Path } = {}): number | undefined {
  return has(o, k) ? asNumber(o[k], opts.path ?? k, opts) : undefined;
}

export function asInt(v: Term | undefined, field: Path, opts: { min?: number; max?: number } = {}): number {
  const ok = typeof v === 'number' ? Number.isInteger(v) : typeof v === 'bigint';
  if (!ok) throw badRequest(field, `expected an integer${range(opts)}`);
  const n = typeof v === 'bigint' ? Number(v) : (v as number);
  if (!Number.isSafeInteger(n) || (opts.min !== undefined && n < opts.min) || (opts.max !== undefined && n > opts.max))
    throw badRequest(field, `expected an integer${range(opts)}`);
  return n;
}
const range = (o: { min?: number; max?: number }): string =>
  o.min === undefined && o.max === undefined ? '' : ` in ${o.min ?? '-inf'}..${o.max ?? 'inf'}`;

export function int(o: TermObject, k: string, opts: { min?: number; max?: number; path?: Path } = {}): number {
  if (!has(o, k)) throw badRequest(opts.path ?? k, `is required (an integer${range(opts)})`);
  return asInt(o[k], opts.path ?? k, opts);
}

export function optInt(o: TermObject, k: string, opts: { min?: number; max?: number; path?: Path } = {}): number | undefined {
  return has(o, k) ? asInt(o[k], opts.path ?? k, opts) : undefined;
}

export function asBool(v: Term | undefined, field: Path): boolean {
  if (typeof v !== 'boolean') throw badRequest(field, 'expected a boolean');
  return v;
}
export function bool(o: TermObject, k: string, path?: Path): boolean {
  if (!has(o, k)) throw badRequest(path ?? k, 'is required (a boolean)');
  return asBool(o[k], path ?? k);
}
export function optBool(o: TermObject, k: string, path?: Path): boolean | undefined {
  return has(o, k) ? asBool(o[k], path ?? k) : undefined;
}

export function list(o: TermObject, k: string, opts: { max?: number; path?: Path } = {}): Term[] {
  const field = opts.path ?? k;
  if (!has(o, k)) throw badRequest(field, 'is required (a list)');
  return asList(o[k], field, opts);
}
export function optList(o: TermObject, k: string, opts: { max?: number; path?: Path } = {}): Term[] | undefined {
  return has(o, k) ? asList(o[k], opts.path ?? k, opts) : undefined;
}
export function asList(v: Term | undefined, field: Path, opts: { max?: number } = {}): Term[] {
  if (!Array.isArray(v)) throw badRequest(field, 'expected a list');
  if (opts.max !== undefined && v.length > opts.max) throw badRequest(field, `expected a list of at most ${opts.max} items`);
  return v;
}

export function optMap(o: TermObject, k: string, path?: Path): TermObject | undefined {
  return has(o, k) ? requireMap(o[k], path ?? k) : undefined;
}

/** A map of string → string (metadata). Atom keys/values become their names. */
export function stringMap(v: Term | undefined, field: Path, opts: { maxEntries?: number; maxBytes?: number } = {}): Record<string, string> {
  const m = requireMap(v, field);
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  const keys = Object.keys(m);
  const maxEntries = opts.maxEntries ?? 256;
  if (keys.length > maxEntries) throw badRequest(field, `expected at most ${maxEntries} entries`);
  let bytes = 0;
  for (const key of keys) {
    storableKey(key, field);
    const val = m[key];
    const s = typeof val === 'string' ? val : val instanceof Atom ? val.name : typeof val === 'number' ? String(val) : undefined;
    if (s === undefined) throw badRequest(keyPath(field, key), 'expected a string');
    bytes += Buffer.byteLength(key) + Buffer.byteLength(storable(s, keyPath(field, key)));
    out[key] = s;
  }
  const maxBytes = opts.maxBytes ?? 64 * 1024;
  if (bytes > maxBytes) throw badRequest(field, `expected at most ${maxBytes} bytes in total`);
  return out;
}

/** A map of string → number (measured figures): entries bounded, keys storable text. */
export function numberMap(v: Term | undefined, field: Path, opts: { maxEntries?: number } = {}): Record<string, number> {
  const m = requireMap(v, field);
  const keys = Object.keys(m);
  const maxEntries = opts.maxEntries ?? 256;
  if (keys.length > maxEntries) throw badRequest(field, `expected at most ${maxEntries} entries`);
  const out: Record<string, number> = Object.create(null) as Record<string, number>;
  for (const key of keys) out[storableKey(key, field)] = asNumber(m[key], keyPath(field, key));
  return out;
}

/** Now as ISO-8601 text, made once per millisecond: a burst of entries shares it (a Date and its text per entry was ~7% of a tracked entry's CPU). */
let nowMs = -1;
let nowText = '';
export function nowIso(): string {
  const ms = Date.now();
  if (ms !== nowMs) {
    nowMs = ms;
    nowText = new Date(ms).toISOString();
  }
  return nowText;
}

const ISO_8601 = /^\d{4}-\d{2}-\d{2}([T ][\d:.]+(Z|[+-]\d{2}:?\d{2})?)?$/;

/** ISO-8601 text or integer unix milliseconds, as ISO-8601 text (UTC), in the years 1970..9999. */
export function asTimestamp(v: Term | undefined, field: Path): string {
  let d: Date;
  if (typeof v === 'string' && ISO_8601.test(v)) d = new Date(v);
  else if (typeof v === 'number' && Number.isInteger(v)) d = new Date(v);
  else throw badRequest(field, 'expected an ISO-8601 timestamp or unix milliseconds');
  if (Number.isNaN(d.getTime()) || d.getUTCFullYear() < 1970 || d.getUTCFullYear() > 9999) throw badRequest(field, 'expected a valid timestamp');
  return d.toISOString();
}

/** `{a, b}` tuples are accepted where a 2-element list is: Elixir users write both. */
export function asPairList(v: Term | undefined, field: Path): Array<[Term, Term]> {
  const items = v instanceof Tuple ? [v] : asList(v, field);
  return items.map((it, i) => {
    if (it instanceof Tuple && it.items.length === 2) return [it.items[0]!, it.items[1]!];
    if (Array.isArray(it) && it.length === 2) return [it[0]!, it[1]!];
    throw badRequest(`${field}[${i}]`, 'expected a pair');
  });
}
