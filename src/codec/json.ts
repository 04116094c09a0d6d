/**
 * The JSON side of the term mapping, for NATS peers that speak JSON (Gnat +
 * Jason). Atoms become strings, floats numbers, tuples arrays, binaries that
 * are not UTF-8 base64 strings; incoming JSON objects become maps that
 * inherit nothing (so `__proto__` stays a plain key).
 */
import { Atom, BitBinary, ErlFloat, ImproperList, Opaque, TermMap, Tuple, isTermObject, newMap, type Term } from './terms.js';

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
    const out = jsonObject();
    for (const [k, v] of t.entries) out[typeof k === 'string' ? k : JSON.stringify(termToJson(k))] = termToJson(v);
    return out;
  }
  if (isTermObject(t)) {
    const out = jsonObject();
    for (const k of Object.keys(t)) out[k] = termToJson(t[k]!);
    return out;
  }
  throw new TypeError('not a term');
}

/** An object for JSON.stringify that inherits nothing: assigning a `__proto__` key makes an own property (no setter on its chain). */
function jsonObject(): { [k: string]: Json } {
  return newMap() as unknown as { [k: string]: Json };
}

/** Parse JSON text into terms: objects become maps (binary keys). */
export function parseJsonTerm(text: string): Term {
  return fromJson(JSON.parse(text) as Json);
}

export function fromJson(v: Json): Term {
  if (v === null || typeof v !== 'object') return v;
  if (Array.isArray(v)) return v.map(fromJson);
  // A map that inherits nothing, so plain assignment is safe even for a `__proto__` key (no setter on its chain).
  const out = newMap();
  for (const k of Object.keys(v)) out[k] = fromJson(v[k]!);
  return out;
}

export function stringifyTerm(t: Term): string {
  return JSON.stringify(termToJson(t));
}
