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
 * How it is fast: one scratch buffer, reused across calls and grown rarely,
 * with the write position in a module variable; the caller gets a copy of
 * the bytes (or, for a result that fills most of the scratch, the scratch
 * itself, which is then replaced), so nothing it holds is overwritten later.
 * Atoms and short strings are written byte by byte in JS when ASCII, long
 * strings by one native UTF-8 write straight into the scratch. A map's keys
 * are checked for term order in one pass and sorted only when they are not
 * in it already (maps that were decoded are); records built in code are
 * sorted once per key layout and the order is cached (bounded).
 *
 * Re-entrancy: ordering a TermMap's keys may encode a term (order.ts); an
 * encode that starts inside another gets its own buffer.
 */
import zlib from 'node:zlib';
import { Atom, BitBinary, ErlFloat, ImproperList, Opaque, TermMap, Tuple, atomKeysOf, isTermObject, type Term, type TermObject } from './terms.js';
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

const SCRATCH_BYTES = 64 * 1024;
/** A scratch grown beyond this is dropped after the call rather than kept for the next one. */
const MAX_KEPT_SCRATCH = 1024 * 1024;
/** Results up to this size are copied out; larger ones that fill half the scratch take it over. */
const COPY_BELOW = 16 * 1024;
/** Strings up to this many UTF-16 units are written in JS when ASCII. */
const SHORT_STRING = 48;

// The state of the encode in progress.
let out: Buffer = Buffer.allocUnsafe(SCRATCH_BYTES);
let pos = 0;
let maxDepth = DEFAULT_MAX_DEPTH;
let busy = false;

/** Encode one term with the version byte. Throws `EtfError('unencodable')` for values with no Erlang form. */
export function encode(term: Term, opts: EncodeOptions = {}): Buffer {
  if (busy) return encodeNested(term, opts);
  busy = true;
  try {
    pos = 0;
    maxDepth = opts.maxDepth ?? DEFAULT_MAX_DEPTH;
    out[pos++] = VERSION;
    encodeTerm(term, 0);
    const n = pos;
    if (opts.compressAbove !== undefined && n > opts.compressAbove) {
      const c = compress(out, n);
      if (c !== undefined) return c;
    }
    let result: Buffer;
    if (n >= COPY_BELOW && 2 * n >= out.length) {
      // Most of the scratch is the result: hand it over and start a new scratch.
      result = out.subarray(0, n);
      out = Buffer.allocUnsafe(SCRATCH_BYTES);
    } else {
      result = Buffer.allocUnsafe(n);
      out.copy(result, 0, 0, n);
      if (out.length > MAX_KEPT_SCRATCH) out = Buffer.allocUnsafe(SCRATCH_BYTES);
    }
    return result;
  } finally {
    busy = false;
  }
}

/** An encode inside an encode: its own buffer, the outer state restored after. */
function encodeNested(term: Term, opts: EncodeOptions): Buffer {
  const outerOut = out;
  const outerPos = pos;
  const outerMax = maxDepth;
  try {
    out = Buffer.allocUnsafe(256);
    pos = 0;
    maxDepth = opts.maxDepth ?? DEFAULT_MAX_DEPTH;
    out[pos++] = VERSION;
    encodeTerm(term, 0);
    if (opts.compressAbove !== undefined && pos > opts.compressAbove) {
      const c = compress(out, pos);
      if (c !== undefined) return c;
    }
    return out.subarray(0, pos);
  } finally {
    out = outerOut;
    pos = outerPos;
    maxDepth = outerMax;
  }
}

/** The compressed form (tag 80) of `bytes[0, n)`, if smaller. */
function compress(bytes: Buffer, n: number): Buffer | undefined {
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
function grow(n: number): void {
  let size = out.length * 2;
  while (size < pos + n) size *= 2;
  const next = Buffer.allocUnsafe(size);
  out.copy(next, 0, 0, pos);
  out = next;
}
function put32(v: number): void {
  out[pos] = v >>> 24;
  out[pos + 1] = v >>> 16;
  out[pos + 2] = v >>> 8;
  out[pos + 3] = v;
  pos += 4;
}
function bytes(b: Uint8Array): void {
  ensure(b.length);
  out.set(b, pos);
  pos += b.length;
}

const f64 = new Float64Array(1);
const f64Bytes = new Uint8Array(f64.buffer);
const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

// ---------------------------------------------------------------- terms

function encodeTerm(t: Term, depth: number): void {
  switch (typeof t) {
    case 'string':
      return encodeString(t);
    case 'number':
      return Number.isInteger(t) ? encodeInteger(t) : encodeFloat(t);
    case 'boolean':
      return encodeAtom(t ? 'true' : 'false');
    case 'bigint':
      return encodeBigInt(t);
    case 'object':
      break;
    default:
      throw new EtfError('unencodable', `cannot encode a ${typeof t}`);
  }
  if (t === null) return encodeAtom('nil');
  if (depth >= maxDepth) throw new EtfError('unencodable', `nesting deeper than ${maxDepth}`);
  if (Array.isArray(t)) return encodeList(t, depth);
  const proto = Object.getPrototypeOf(t) as unknown;
  if (proto === null || proto === Object.prototype) return encodeObject(t as TermObject, depth);
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
  if (isTermObject(t)) return encodeObject(t, depth);
  throw new EtfError('unencodable', `cannot encode an instance of ${(t as object).constructor?.name ?? 'unknown'}`);
}

function encodeString(s: string): void {
  const n = s.length;
  if (n <= SHORT_STRING) {
    ensure(5 + n);
    const b = out;
    const p0 = pos;
    let p = p0 + 5;
    let i = 0;
    for (; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c > 0x7f) break;
      b[p++] = c;
    }
    if (i === n) {
      b[p0] = TAG.BINARY;
      b[p0 + 1] = 0;
      b[p0 + 2] = 0;
      b[p0 + 3] = 0;
      b[p0 + 4] = n;
      pos = p;
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
  const b = out;
  const p = pos;
  b[p] = TAG.NEW_FLOAT;
  f64[0] = v;
  if (littleEndian) {
    b[p + 1] = f64Bytes[7]!;
    b[p + 2] = f64Bytes[6]!;
    b[p + 3] = f64Bytes[5]!;
    b[p + 4] = f64Bytes[4]!;
    b[p + 5] = f64Bytes[3]!;
    b[p + 6] = f64Bytes[2]!;
    b[p + 7] = f64Bytes[1]!;
    b[p + 8] = f64Bytes[0]!;
  } else for (let i = 0; i < 8; i++) b[p + 1 + i] = f64Bytes[i]!;
  pos = p + 9;
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
 * A map object, keys in term order as term_to_binary writes a flatmap:
 * atoms before binaries, each by their UTF-8 bytes; keys whose value is
 * `undefined` left out.
 */
function encodeObject(obj: TermObject, depth: number): void {
  const atoms = atomKeysOf(obj);
  const keys = Object.keys(obj);
  const n = keys.length;
  ensure(5);
  out[pos++] = TAG.MAP;
  const countAt = pos;
  pos += 4;
  const order = keyOrder(keys, atoms);
  let written = 0;
  for (let i = 0; i < n; i++) {
    const k = order === undefined ? keys[i]! : order[i]!;
    const v = obj[k];
    if (v === undefined) continue;
    if (atoms !== undefined && atoms.has(k)) encodeAtom(k);
    else encodeString(k);
    encodeTerm(v, depth + 1);
    written++;
  }
  out[countAt] = written >>> 24;
  out[countAt + 1] = written >>> 16;
  out[countAt + 2] = written >>> 8;
  out[countAt + 3] = written;
}

/** `keys` in term order, or undefined when they already are. */
function keyOrder(keys: string[], atoms: ReadonlySet<string> | undefined): string[] | undefined {
  const n = keys.length;
  let prevAtom = true;
  let prev = '';
  for (let i = 0; i < n; i++) {
    const k = keys[i]!;
    const isAtom = atoms !== undefined && atoms.has(k);
    if (i > 0 && ((isAtom && !prevAtom) || (isAtom === prevAtom && compareUtf8(prev, k) >= 0))) return sortedKeys(keys, atoms);
    prevAtom = isAtom;
    prev = k;
  }
  return undefined;
}

/**
 * Sorted key lists of maps built in code (records), by their key list and
 * atom-key set: the same record layout is sorted once. A fixed table of
 * slots by a hash of the first and last keys; a different layout in a slot
 * replaces it. Entries hold only key names the process already holds.
 */
const ORDER_SLOTS = 256;
const orderKeys: Array<string[] | undefined> = new Array<string[] | undefined>(ORDER_SLOTS).fill(undefined);
const orderAtoms: Array<ReadonlySet<string> | undefined> = new Array<ReadonlySet<string> | undefined>(ORDER_SLOTS).fill(undefined);
const orderSorted: Array<string[] | undefined> = new Array<string[] | undefined>(ORDER_SLOTS).fill(undefined);

function sortedKeys(keys: string[], atoms: ReadonlySet<string> | undefined): string[] {
  const n = keys.length;
  const first = keys[0]!;
  const last = keys[n - 1]!;
  const slot = (n * 31 + first.length * 7 + last.length + first.charCodeAt(0) * 3 + last.charCodeAt(last.length - 1)) & (ORDER_SLOTS - 1);
  const ck = orderKeys[slot];
  if (ck !== undefined && ck.length === n) {
    let same = true;
    const ca = orderAtoms[slot];
    for (let i = 0; i < n; i++) {
      const k = keys[i]!;
      if (ck[i] !== k || (ca !== atoms && (atoms !== undefined && atoms.has(k)) !== (ca !== undefined && ca.has(k)))) {
        same = false;
        break;
      }
    }
    if (same) return orderSorted[slot]!;
  }
  const atomK: string[] = [];
  const binK: string[] = [];
  for (let i = 0; i < n; i++) {
    const k = keys[i]!;
    if (atoms !== undefined && atoms.has(k)) atomK.push(k);
    else binK.push(k);
  }
  atomK.sort(compareUtf8);
  binK.sort(compareUtf8);
  const sorted = binK.length === 0 ? atomK : atomK.concat(binK);
  orderKeys[slot] = keys;
  orderAtoms[slot] = atoms;
  orderSorted[slot] = sorted;
  return sorted;
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
