/**
 * Erlang term order: how term_to_binary orders map keys (compareTerms), and
 * the UTF-8 byte order of strings it rests on (compareUtf8). Owns ordering
 * only; the encoder uses it to sort map keys (encode.ts caches the result
 * per map layout). Hand-written with the rest of the codec (see decode.ts):
 * no package implements Erlang's term order over this term mapping.
 */
import { Atom, BitBinary, ErlFloat, ImproperList, Opaque, TermMap, Tuple, type Term } from './terms.js';
import { encode } from './encode.js';

/**
 * UTF-8 byte order of two strings. It equals UTF-16 code-unit order up to
 * the first unit that differs, unless one of the two differing units is a
 * surrogate (an astral character sorts after U+E000–U+FFFF in UTF-8 but
 * before them in UTF-16): only then are the strings encoded and compared
 * as bytes (which also gives lone surrogates their U+FFFD encoding).
 */
export function compareUtf8(a: string, b: string): number {
  if (a === b) return 0;
  const n = a.length < b.length ? a.length : b.length;
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    if ((x & 0xf800) === 0xd800 || (y & 0xf800) === 0xd800) return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
    return x - y;
  }
  return a.length - b.length;
}

/** Erlang term order by type class: number < atom < reference < fun < port < pid < tuple < map < nil < list < bitstring. */
function typeRank(t: Term): number {
  if (typeof t === 'number' || typeof t === 'bigint' || t instanceof ErlFloat) return 0;
  if (t === null || typeof t === 'boolean' || t instanceof Atom) return 1;
  if (t instanceof Opaque) return t.kind === 'reference' ? 2 : t.kind === 'port' ? 4 : 5;
  if (t instanceof Tuple) return 6;
  if (t instanceof TermMap) return 7;
  if (Array.isArray(t)) return t.length === 0 ? 8 : 9;
  if (t instanceof ImproperList) return 9;
  if (typeof t === 'string' || Buffer.isBuffer(t) || t instanceof BitBinary) return 10;
  return 7; // plain objects are maps
}

/** Erlang term order, far enough to sort map keys the way term_to_binary does for the common key types. */
export function compareTerms(a: Term, b: Term): number {
  const ra = typeRank(a);
  const rb = typeRank(b);
  if (ra !== rb) return ra - rb;
  switch (ra) {
    case 0: {
      // Map keys: integers sort before floats of equal value (exact term order for keys).
      const x = a instanceof ErlFloat ? a.value : (a as number | bigint);
      const y = b instanceof ErlFloat ? b.value : (b as number | bigint);
      if (x < y) return -1;
      if (x > y) return 1;
      return (a instanceof ErlFloat ? 1 : 0) - (b instanceof ErlFloat ? 1 : 0);
    }
    case 1:
      return compareUtf8(atomText(a), atomText(b));
    case 6: {
      const ta = (a as Tuple).items;
      const tb = (b as Tuple).items;
      if (ta.length !== tb.length) return ta.length - tb.length;
      for (let i = 0; i < ta.length; i++) {
        const c = compareTerms(ta[i]!, tb[i]!);
        if (c !== 0) return c;
      }
      return 0;
    }
    case 9: {
      const la = Array.isArray(a) ? a : (a as ImproperList).items;
      const lb = Array.isArray(b) ? b : (b as ImproperList).items;
      for (let i = 0; i < Math.min(la.length, lb.length); i++) {
        const c = compareTerms(la[i]!, lb[i]!);
        if (c !== 0) return c;
      }
      return la.length - lb.length;
    }
    case 10:
      return Buffer.compare(bytesOf(a), bytesOf(b));
    default:
      return Buffer.compare(encode(a), encode(b));
  }
}

function atomText(t: Term): string {
  if (t === null) return 'nil';
  if (typeof t === 'boolean') return t ? 'true' : 'false';
  return (t as Atom).name;
}

function bytesOf(t: Term): Buffer {
  if (typeof t === 'string') return Buffer.from(t, 'utf8');
  if (t instanceof BitBinary) return t.bytes;
  return t as Buffer;
}
