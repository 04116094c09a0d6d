/**
 * The JSON side of the term mapping, for NATS peers that speak JSON (Gnat +
 * Jason). Atoms become strings, floats numbers, tuples arrays, binaries that
 * are not UTF-8 base64 strings; incoming JSON objects become null-prototype
 * maps (so `__proto__` stays a plain key).
 */
import { Atom, BitBinary, ErlFloat, ImproperList, Opaque, TermMap, Tuple, isTermObject, type Term, type TermObject } from './terms.js';

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

export function termToJson(t: Term): Json {
  if (t === null || typeof t === 'boolean' || typeof t === 'string') return t;
  if (typeof t === 'number') return t;
  if (typeof t === 'bigint') return Number.isSafeInteger(Number(t)) ? Number(t) : t.toString();
  if (t instanceof ErlFloat) return t.value;
  if (t instanceof Atom) return t.name;
  if (Array.isArray(t)) return t.map(termToJson);
  if (t instanceof Tuple) return t.items.map(termToJson);
  if (Buffer.isBuffer(t)) return t.toString('base64');
  if (t instanceof ImproperList) return [...t.items.map(termToJson), termToJson(t.tail)];
  if (t instanceof BitBinary || t instanceof Opaque) return t.bytes.toString('base64');
  if (t instanceof TermMap) {
    const out: { [k: string]: Json } = {};
    for (const [k, v] of t.entries) defineJson(out, typeof k === 'string' ? k : JSON.stringify(termToJson(k)), termToJson(v));
    return out;
  }
  if (isTermObject(t)) {
    const out: { [k: string]: Json } = {};
    for (const k of Object.keys(t)) defineJson(out, k, termToJson(t[k]!));
    return out;
  }
  throw new TypeError('not a term');
}

function defineJson(o: { [k: string]: Json }, k: string, v: Json): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

/** Parse JSON text into terms: objects become null-prototype maps (binary keys). */
export function parseJsonTerm(text: string): Term {
  return fromJson(JSON.parse(text) as Json);
}

export function fromJson(v: Json): Term {
  if (v === null || typeof v !== 'object') return v;
  if (Array.isArray(v)) return v.map(fromJson);
  const out = Object.create(null) as TermObject;
  for (const k of Object.keys(v)) Object.defineProperty(out, k, { value: fromJson(v[k]!), enumerable: true, writable: true, configurable: true });
  return out;
}

export function stringifyTerm(t: Term): string {
  return JSON.stringify(termToJson(t));
}
