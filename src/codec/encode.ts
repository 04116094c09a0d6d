/**
 * ETF encoding: the term mapping of terms.ts → the bytes of one term
 * (version 131), byte for byte what `term_to_binary(T, [{minor_version, 2}])`
 * writes for the types we produce (atoms as 118/119, integers as
 * 97/98/110/111, floats as 70, lists of bytes as 107, maps in term order).
 * Owns the writing side only; decoding is decode.ts, term order order.ts.
 *
 * Written by hand for the reasons in decode.ts, and because encoding is on
 * every reply: the first encoder allocated a growing Buffer per call, sorted
 * each map's keys with a regular expression test per comparison and went
 * through Buffer's native `write` for every atom.
 *
 * How it is fast: encoding writes straight into a reused slab, with the
 * write position in a module variable, and the caller gets the written
 * range as its own Buffer (no copy, no allocation of a backing store per
 * result; see SLAB_BYTES). Atoms and short strings are written in JS when
 * ASCII, four characters to a 32-bit write; long strings by one native
 * UTF-8 write into the slab. A map object is written through its layout
 * (its key list and which keys are atoms): the term order of the keys and
 * each key's bytes are worked out once per layout and cached in a bounded
 * table, so a record is written by copying key bytes between its values,
 * with no sorting and no text encoding of keys.
 *
 * Re-entrancy: ordering a TermMap's keys may encode a term (order.ts); an
 * encode that starts inside another gets its own buffer.
 */
import zlib from 'node:zlib';
import { Atom, BitBinary, ErlFloat, ImproperList, MAP_PROTO, Opaque, TermMap, Tuple, atomKeysOf, isMapPrototype, isTermObject, type Term, type TermObject } from './terms.js';
import { DEFAULT_MAX_DEPTH, EtfError, TAG, VERSION } from './format.js';
import { compareTerms, compareUtf8 } from './order.js';

export interface EncodeOptions {
  /** Compress (tag 80) when the encoded term is larger than this many bytes. Off by default. */
  compressAbove?: number;
  /** Deepest nesting produced. Default 512. */
  maxDepth?: number;
}

/** Buffer's own native writer (what `write(s, offset, 'utf8')` calls after checking its arguments). */
interface Utf8Writer {
  utf8Write(s: string, offset: number, length: number): number;
}
const hasUtf8Write = typeof (Buffer.prototype as unknown as Partial<Utf8Writer>).utf8Write === 'function';

/**
 * Results are carved one after another from a slab of SLAB_BYTES, the way
 * Buffer.allocUnsafe carves small buffers from its 8 KiB pool: encoding
 * writes straight into the slab, and the caller gets the written range as
 * its own Buffer (never written again), with no copy and no allocation of
 * its own backing store. A result keeps its slab alive as long as it is
 * held. An encode that outgrows the slab moves to a larger buffer of its
 * own, which is not reused after it.
 */
const SLAB_BYTES = 128 * 1024;
/** With fewer free bytes than this left, the next encode starts a new slab. */
const MIN_FREE = 2048;
/** Strings up to this many UTF-16 units are written in JS when ASCII. */
const SHORT_STRING = 48;

// The state of the encode in progress: the buffer, where this term started in it, where it is.
let out: Buffer = Buffer.allocUnsafe(SLAB_BYTES);
/** A view of `out` for writing four bytes at once (big-endian, any alignment). */
let view = new DataView(out.buffer, out.byteOffset, out.length);
let base = 0;
let pos = 0;
/** Where the next encode starts in `out`. */
let free = 0;
let maxDepth = DEFAULT_MAX_DEPTH;
let busy = false;

function setOut(b: Buffer): void {
  out = b;
  view = new DataView(b.buffer, b.byteOffset, b.length);
}

/** Encode one term with the version byte. Throws `EtfError('unencodable')` for values with no Erlang form. */
export function encode(term: Term, opts: EncodeOptions = {}): Buffer {
  if (busy) return encodeNested(term, opts);
  busy = true;
  try {
    if (out.length - free < MIN_FREE || out.length > SLAB_BYTES) {
      setOut(Buffer.allocUnsafe(SLAB_BYTES));
      free = 0;
    }
    base = pos = free;
    maxDepth = opts.maxDepth ?? DEFAULT_MAX_DEPTH;
    out[pos++] = VERSION;
    encodeTerm(term, 0);
    if (opts.compressAbove !== undefined && pos - base > opts.compressAbove) {
      const c = compress(out.subarray(base, pos));
      if (c !== undefined) return c; // and the slab range is free again
    }
    const result = out.subarray(base, pos);
    free = (pos + 7) & ~7;
    return result;
  } finally {
    busy = false;
  }
}

/** An encode inside an encode: its own buffer, the outer state restored after. */
function encodeNested(term: Term, opts: EncodeOptions): Buffer {
  const outerOut = out;
  const outerBase = base;
  const outerPos = pos;
  const outerMax = maxDepth;
  try {
    setOut(Buffer.allocUnsafe(256));
    base = pos = 0;
    maxDepth = opts.maxDepth ?? DEFAULT_MAX_DEPTH;
    out[pos++] = VERSION;
    encodeTerm(term, 0);
    const bytes = out.subarray(0, pos);
    if (opts.compressAbove !== undefined && pos > opts.compressAbove) return compress(bytes) ?? bytes;
    return bytes;
  } finally {
    setOut(outerOut);
    base = outerBase;
    pos = outerPos;
    maxDepth = outerMax;
  }
}

/** The compressed form (tag 80) of an encoded term, if smaller. */
function compress(bytes: Buffer): Buffer | undefined {
  const n = bytes.length;
  const body = bytes.subarray(1, n);
  const z = zlib.deflateSync(body);
  if (z.length + 6 >= n) return undefined;
  const c = Buffer.allocUnsafe(6 + z.length);
  c[0] = VERSION;
  c[1] = TAG.COMPRESSED;
  c.writeUInt32BE(body.length, 2);
  z.copy(c, 6);
  return c;
}

// ---------------------------------------------------------------- writing primitives

function ensure(n: number): void {
  if (pos + n > out.length) grow(n);
}
/** Move the term written so far to a buffer with room for `n` more bytes (and half as much again). */
function grow(n: number): void {
  const used = pos - base;
  const need = used + n;
  const next = Buffer.allocUnsafe(Math.max(SLAB_BYTES, need + (need >> 1)));
  out.copy(next, 0, base, pos);
  setOut(next);
  base = 0;
  pos = used;
}
function put32(v: number): void {
  view.setUint32(pos, v >>> 0);
  pos += 4;
}
function bytes(b: Uint8Array): void {
  ensure(b.length);
  out.set(b, pos);
  pos += b.length;
}


// ---------------------------------------------------------------- terms

function encodeTerm(t: Term, depth: number): void {
  switch (typeof t) {
    case 'string':
      return encodeString(t);
    case 'number':
      return Number.isInteger(t) ? encodeInteger(t) : encodeFloat(t);
    case 'boolean':
      return t ? encodeTrue() : encodeFalse();
    case 'bigint':
      return encodeBigInt(t);
    case 'object':
      break;
    default:
      throw new EtfError('unencodable', `cannot encode a ${typeof t}`);
  }
  if (t === null) return encodeNil();
  if (depth >= maxDepth) throw new EtfError('unencodable', `nesting deeper than ${maxDepth}`);
  if (Array.isArray(t)) return encodeList(t, depth);
  const proto = Object.getPrototypeOf(t) as unknown;
  // The commonest prototypes first (a pointer comparison each), then a decoded shape's map
  // prototype (isMapPrototype), then instanceof for subclasses.
  if (proto === MAP_PROTO || proto === Object.prototype || proto === null) return encodeObject(t as TermObject, proto, depth);
  if (proto === ErlFloat.prototype) return encodeFloat((t as ErlFloat).value);
  if (proto === Atom.prototype) return encodeAtom((t as Atom).name);
  if (isMapPrototype(proto)) return encodeObject(t as TermObject, proto, depth);
  if (t instanceof Atom) return encodeAtom(t.name);
  if (t instanceof ErlFloat) return encodeFloat(t.value);
  if (t instanceof Tuple) {
    const items = t.items;
    const n = items.length;
    ensure(5);
    if (n < 256) {
      out[pos++] = TAG.SMALL_TUPLE;
      out[pos++] = n;
    } else {
      out[pos++] = TAG.LARGE_TUPLE;
      put32(n);
    }
    for (let i = 0; i < n; i++) encodeTerm(items[i]!, depth + 1);
    return;
  }
  if (Buffer.isBuffer(t) || t instanceof Uint8Array) {
    ensure(5);
    out[pos++] = TAG.BINARY;
    put32(t.length);
    return bytes(t);
  }
  if (t instanceof Opaque) return bytes(t.bytes);
  if (t instanceof ImproperList) {
    const items = t.items;
    ensure(5);
    out[pos++] = TAG.LIST;
    put32(items.length);
    for (let i = 0; i < items.length; i++) encodeTerm(items[i]!, depth + 1);
    return encodeTerm(t.tail, depth + 1);
  }
  if (t instanceof BitBinary) {
    ensure(6);
    out[pos++] = TAG.BIT_BINARY;
    put32(t.bytes.length);
    out[pos++] = t.bits;
    return bytes(t.bytes);
  }
  if (t instanceof TermMap) return encodeTermMap(t, depth);
  if (isTermObject(t)) return encodeObject(t, Object.getPrototypeOf(t), depth);
  throw new EtfError('unencodable', `cannot encode an instance of ${(t as object).constructor?.name ?? 'unknown'}`);
}

function encodeString(s: string): void {
  const n = s.length;
  if (n <= SHORT_STRING) {
    // Four characters to a 32-bit write; the ASCII check is on all of them at the end.
    ensure(8 + n);
    const dv = view;
    const p0 = pos + 5;
    let or = 0;
    let i = 0;
    for (; i + 4 <= n; i += 4) {
      const a = s.charCodeAt(i);
      const b = s.charCodeAt(i + 1);
      const c = s.charCodeAt(i + 2);
      const d = s.charCodeAt(i + 3);
      or |= a | b | c | d;
      dv.setInt32(p0 + i, (a << 24) | (b << 16) | (c << 8) | d);
    }
    for (; i < n; i++) {
      const c = s.charCodeAt(i);
      or |= c;
      out[p0 + i] = c;
    }
    if (or < 0x80) {
      out[pos] = TAG.BINARY;
      dv.setInt32(pos + 1, n);
      pos = p0 + n;
      return;
    }
  }
  // At most 3 bytes per UTF-16 unit; beyond 64 Ki units, ask for the exact size rather than reserve 3×.
  const max = n <= 0x10000 ? 3 * n : Buffer.byteLength(s, 'utf8');
  ensure(5 + max);
  const start = pos;
  const written = hasUtf8Write ? (out as unknown as Utf8Writer).utf8Write(s, start + 5, max) : out.write(s, start + 5, max, 'utf8');
  out[start] = TAG.BINARY;
  pos = start + 1;
  put32(written);
  pos = start + 5 + written;
}

function encodeAtom(name: string): void {
  const n = name.length;
  if (n < 256) {
    // ASCII names byte by byte: one byte per character.
    ensure(2 + n);
    const b = out;
    const p0 = pos;
    let p = p0 + 2;
    let i = 0;
    for (; i < n; i++) {
      const c = name.charCodeAt(i);
      if (c > 0x7f) break;
      b[p++] = c;
    }
    if (i === n) {
      b[p0] = TAG.SMALL_ATOM_UTF8;
      b[p0 + 1] = n;
      pos = p;
      return;
    }
  }
  const len = Buffer.byteLength(name, 'utf8');
  if (name.length > 255 && [...name].length > 255) throw new EtfError('unencodable', `atom longer than 255 characters`);
  ensure(3 + len);
  if (len < 256) {
    out[pos++] = TAG.SMALL_ATOM_UTF8;
    out[pos++] = len;
  } else {
    out[pos++] = TAG.ATOM_UTF8;
    out[pos++] = len >>> 8;
    out[pos++] = len;
  }
  pos += out.write(name, pos, len, 'utf8');
}

// true, false and nil as SMALL_ATOM_UTF8, written as words: 119 4 't' 'r' | 'u' 'e'; 119 5 'f' 'a' | 'l' 's' 'e'; 119 3 'n' 'i' | 'l'.
function encodeTrue(): void {
  ensure(8);
  view.setInt32(pos, 0x77047472);
  view.setInt16(pos + 4, 0x7565);
  pos += 6;
}
function encodeFalse(): void {
  ensure(8);
  view.setInt32(pos, 0x77056661);
  view.setInt32(pos + 4, 0x6c736500);
  pos += 7;
}
function encodeNil(): void {
  ensure(8);
  view.setInt32(pos, 0x77036e69);
  out[pos + 4] = 0x6c;
  pos += 5;
}

function encodeInteger(n: number): void {
  ensure(5);
  if (n >= 0 && n <= 255) {
    out[pos++] = TAG.SMALL_INTEGER;
    out[pos++] = n;
  } else if (n >= -2147483648 && n <= 2147483647) {
    out[pos++] = TAG.INTEGER;
    put32(n);
  } else if (Number.isSafeInteger(n)) {
    // Up to 7 bytes: the magnitude little-endian, without going through BigInt.
    let mag = Math.abs(n);
    ensure(10);
    out[pos++] = TAG.SMALL_BIG;
    const lenAt = pos++;
    out[pos++] = n < 0 ? 1 : 0;
    let len = 0;
    while (mag > 0) {
      out[pos++] = mag % 256;
      mag = Math.floor(mag / 256);
      len++;
    }
    out[lenAt] = len;
  } else {
    throw new EtfError('unencodable', `integer ${n} is beyond 2^53: pass a bigint`);
  }
}

function encodeBigInt(v: bigint): void {
  if (v >= -2147483648n && v <= 2147483647n) return encodeInteger(Number(v));
  let mag = v < 0n ? -v : v;
  const digits: number[] = [];
  while (mag > 0n) {
    digits.push(Number(mag & 0xffn));
    mag >>= 8n;
  }
  ensure(6);
  if (digits.length < 256) {
    out[pos++] = TAG.SMALL_BIG;
    out[pos++] = digits.length;
  } else {
    out[pos++] = TAG.LARGE_BIG;
    put32(digits.length);
  }
  out[pos++] = v < 0n ? 1 : 0;
  bytes(Uint8Array.from(digits));
}

function encodeFloat(v: number): void {
  if (v - v !== 0) throw new EtfError('unencodable', `non-finite float ${v}`);
  ensure(9);
  out[pos] = TAG.NEW_FLOAT;
  view.setFloat64(pos + 1, v);
  pos += 9;
}

function encodeList(items: Term[], depth: number): void {
  const n = items.length;
  if (n === 0) {
    ensure(1);
    out[pos++] = TAG.NIL;
    return;
  }
  if (n < 65536 && isByteList(items)) {
    // What term_to_binary does for a list of bytes: STRING_EXT.
    ensure(3 + n);
    out[pos++] = TAG.STRING;
    out[pos++] = n >>> 8;
    out[pos++] = n;
    for (let i = 0; i < n; i++) out[pos++] = items[i] as number;
    return;
  }
  ensure(5);
  out[pos++] = TAG.LIST;
  put32(n);
  for (let i = 0; i < n; i++) encodeTerm(items[i]!, depth + 1);
  ensure(1);
  out[pos++] = TAG.NIL;
}

function isByteList(items: Term[]): boolean {
  for (let i = 0; i < items.length; i++) {
    const x = items[i];
    if (typeof x !== 'number' || !Number.isInteger(x) || x < 0 || x > 255) return false;
  }
  return true;
}

// ---------------------------------------------------------------- maps

/**
 * A map layout: the keys of a map object as Object.keys lists them, which
 * are atoms, the order term_to_binary writes them in, and each key already
 * encoded. Maps of one layout (every reply record of one kind, every map
 * decoded along one shape) are written by copying the key bytes in the
 * cached order, with no sorting and no text encoding of keys.
 *
 * Found by a hash of the key count and the first and last keys in a fixed
 * table of LAYOUT_SLOTS slots, a new layout replacing the one in its slot,
 * and checked key by key before use. Only maps of at most LAYOUT_MAX_KEYS
 * keys of at most LAYOUT_MAX_KEY characters are cached, so the table holds
 * a bounded number of bytes whatever maps go through it.
 */
class Layout {
  constructor(
    readonly keys: readonly string[],
    /** The atom-key set the layout was made for: a map with the same set needs no look-ups. */
    readonly atoms: ReadonlySet<string> | undefined,
    readonly isAtom: Uint8Array,
    /** Whether every key is an atom. */
    readonly allAtoms: boolean,
    /** Position in term order → index in `keys`. */
    readonly order: Int32Array,
    /** Position in term order → that key's encoding, as big-endian 32-bit words (the last one padded)… */
    readonly keyWords: readonly Int32Array[],
    /** …and its length in bytes. */
    readonly keyLengths: Int32Array,
  ) {}
}
const LAYOUT_SLOTS = 1024;
const LAYOUT_MAX_KEYS = 64;
const LAYOUT_MAX_KEY = 64;
const layouts: Array<Layout | undefined> = new Array<Layout | undefined>(LAYOUT_SLOTS).fill(undefined);

function layoutSlot(keys: string[], n: number): number {
  const first = keys[0]!;
  const last = keys[n - 1]!;
  const h = Math.imul(n, 0x9e3779b1) ^ Math.imul(first.length * 131 + first.charCodeAt(first.length - 1), 0x85ebca6b) ^ Math.imul(last.length * 131 + last.charCodeAt(0), 0xc2b2ae35);
  return (h ^ (h >>> 15)) & (LAYOUT_SLOTS - 1);
}

/** The cached layout of `keys` under `atoms`, or undefined. */
function findLayout(keys: string[], n: number, atoms: ReadonlySet<string> | undefined): Layout | undefined {
  const l = layouts[layoutSlot(keys, n)];
  if (l === undefined || l.keys.length !== n) return undefined;
  const lk = l.keys;
  for (let i = 0; i < n; i++) if (lk[i] !== keys[i]) return undefined;
  if (l.atoms === atoms) return l;
  if (l.allAtoms && atoms !== undefined && atoms.size === n) {
    // A record's set lists its keys in the order the object does: walk both at once.
    let i = 0;
    for (const k of atoms) {
      if (k !== keys[i]) break;
      i++;
    }
    if (i === n) return l;
  }
  const a = l.isAtom;
  for (let i = 0; i < n; i++) if ((atoms !== undefined && atoms.has(keys[i]!) ? 1 : 0) !== a[i]) return undefined;
  return l;
}

/** Make (and cache) the layout of `keys` under `atoms`; undefined if a key cannot be encoded. */
function makeLayout(keys: string[], n: number, atoms: ReadonlySet<string> | undefined): Layout | undefined {
  const isAtom = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    if (keys[i]!.length > LAYOUT_MAX_KEY) return undefined;
    isAtom[i] = atoms !== undefined && atoms.has(keys[i]!) ? 1 : 0;
  }
  // term order, as term_to_binary writes a flatmap: atoms before binaries; each by its bytes.
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  order.sort((x, y) => isAtom[y]! - isAtom[x]! || compareUtf8(keys[x]!, keys[y]!));
  const keyBytes: Uint8Array[] = [];
  const outerOut = out;
  const outerBase = base;
  const outerPos = pos;
  try {
    setOut(Buffer.allocUnsafe(256));
    base = 0;
    for (let j = 0; j < n; j++) {
      pos = 0;
      const k = keys[order[j]!]!;
      if (isAtom[order[j]!] === 1) encodeAtom(k);
      else encodeString(k);
      keyBytes.push(Uint8Array.from(out.subarray(0, pos)));
    }
  } catch {
    return undefined; // the general path will throw it, where the first encoder did
  } finally {
    setOut(outerOut);
    base = outerBase;
    pos = outerPos;
  }
  const keyWords = keyBytes.map((kb) => {
    const w = new Int32Array((kb.length + 3) >> 2);
    for (let i = 0; i < kb.length; i++) w[i >> 2]! |= kb[i]! << (24 - 8 * (i & 3));
    return w;
  });
  const l = new Layout(keys.slice(), atoms, isAtom, isAtom.every((x) => x === 1), order, keyWords, Int32Array.from(keyBytes, (kb) => kb.length));
  layouts[layoutSlot(keys, n)] = l;
  return l;
}

/**
 * A map object, keys in term order as term_to_binary writes a flatmap:
 * atoms before binaries, each by their UTF-8 bytes; keys whose value is
 * `undefined` left out.
 */
function encodeObject(obj: TermObject, proto: unknown, depth: number): void {
  const atoms = atomKeysOf(obj, proto);
  const keys = Object.keys(obj);
  const n = keys.length;
  const l = n === 0 || n > LAYOUT_MAX_KEYS ? undefined : (findLayout(keys, n, atoms) ?? makeLayout(keys, n, atoms));
  if (l === undefined) return encodeObjectSlowly(obj, keys, atoms, depth);
  ensure(5);
  out[pos++] = TAG.MAP;
  const countAt = pos - base; // relative: the buffer may move while the values are written
  pos += 4;
  const order = l.order;
  const keyWords = l.keyWords;
  const keyLengths = l.keyLengths;
  const values = Object.values(obj);
  let written = 0;
  for (let j = 0; j < n; j++) {
    const v = values[order[j]!];
    if (v === undefined) continue;
    const kw = keyWords[j]!;
    const m = keyLengths[j]!;
    ensure(m + 3);
    const dv = view;
    const p = pos;
    for (let i = 0; i < kw.length; i++) dv.setInt32(p + 4 * i, kw[i]!);
    pos = p + m;
    encodeTerm(v, depth + 1);
    written++;
  }
  view.setInt32(base + countAt, written);
}

/** A map with no cacheable layout (many or long keys): sorted here, each time. */
function encodeObjectSlowly(obj: TermObject, keys: string[], atoms: ReadonlySet<string> | undefined, depth: number): void {
  const atomK: string[] = [];
  const binK: string[] = [];
  for (const k of keys) if (obj[k] !== undefined) (atoms?.has(k) ? atomK : binK).push(k);
  atomK.sort(compareUtf8);
  binK.sort(compareUtf8);
  ensure(5);
  out[pos++] = TAG.MAP;
  put32(atomK.length + binK.length);
  for (const k of atomK) {
    encodeAtom(k);
    encodeTerm(obj[k]!, depth + 1);
  }
  for (const k of binK) {
    encodeString(k);
    encodeTerm(obj[k]!, depth + 1);
  }
}

function encodeTermMap(m: TermMap, depth: number): void {
  const entries = [...m.entries].sort((a, b) => compareTerms(a[0], b[0]));
  ensure(5);
  out[pos++] = TAG.MAP;
  put32(entries.length);
  for (const [k, v] of entries) {
    encodeTerm(k, depth + 1);
    encodeTerm(v, depth + 1);
  }
}
