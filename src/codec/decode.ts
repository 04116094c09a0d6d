/**
 * ETF decoding: the bytes of one term (version 131) → the term mapping of
 * terms.ts. Owns the wire-reading side only: bounds and limits, the atom
 * name cache and the map shape cache. Encoding is encode.ts, term order
 * order.ts, the shared tags and error type format.ts.
 *
 * Written by hand because every ETF codec on npm gets part of the mapping
 * wrong (erlang_js truncates integers beyond 2^31 and sends strings as
 * Latin-1 charlists; erlpack rejects OTP 26 atoms, pids and refs) and none
 * is safe on hostile input — and because the generic shape of a decoder
 * (a Reader object, a `[pos, value]` pair per term, a Set per map) is what
 * made decoding slower than JSON.parse.
 *
 * How it is fast: one pass over the buffer with the read position in a
 * module variable (decode is synchronous and never re-entered) and
 * multi-byte fields read through a DataView; tags dispatched as numeric
 * literals; atom names (and their terms) and short ASCII binaries taken
 * from fixed-size tables keyed by their bytes (and ASCII binaries of up to
 * 32 bytes from a second such table), longer binaries made by one
 * native UTF-8 decode whose validity is checked again only when the result
 * holds U+FFFD; maps whose keys follow a shape seen before (the protocol's
 * records) matched key by key against the cached wire bytes of the shape's
 * keys, four bytes at a time, and built as fast-layout objects that share
 * the shape's atom-key set, so a map costs one object and no Set (for the
 * shapes most maps end at, by a generated constructor whose prototype
 * carries that set, so not even a stamp per map: see Built). A map whose
 * key count is that of the last built shape of that size is first read by
 * that shape's generated reader, which compares each key's bytes with
 * integer literals, keeps the values in locals and calls the constructor
 * directly (no kid search, no values stack, an inlinable `new`); on the
 * first key that differs it hands what it read to the general loop, which
 * goes on from that key (the optimize request of bench/codec.ts: 5.0 → 4.1 µs). Every
 * cache is bounded whatever a peer sends (ATOM_SLOTS, STRING_SLOTS,
 * MEDIUM_SLOTS, MAX_SHAPES, MAX_BUILDERS) and wire atoms are interned only up to Atom.MAX_WIRE_ATOMS.
 *
 * Safety, unchanged from the first decoder: every declared length is
 * checked against the bytes left before anything is allocated, nesting
 * depth and decompressed size are bounded, trailing bytes are an error, map
 * keys land on objects that inherit nothing (MAP_PROTO), and each failure is an
 * `EtfError` with the same code, message and offset as before.
 */
import { isUtf8 } from 'node:buffer';
import zlib from 'node:zlib';
import { Atom, BitBinary, ErlFloat, ImproperList, MAP_PROTO, Opaque, TermMap, Tuple, initAtomKeys, mapPrototypeWithAtomKeys, newMap, type Term, type TermObject } from './terms.js';
import { DEFAULT_MAX_DEPTH, EtfError, TAG, VERSION } from './format.js';

export interface DecodeOptions {
  /** Deepest nesting of lists/tuples/maps accepted. Default 512, at most 2048. */
  maxDepth?: number;
  /** Largest accepted uncompressed size of a compressed term. Default 64 MiB. */
  maxDecompressedBytes?: number;
  /** Largest accepted bignum, in bytes. Default 8192 (a 65,536-bit integer). */
  maxBigBytes?: number;
}

const HARD_MAX_DEPTH = 2048;
const DEFAULT_MAX_DECOMPRESSED = 64 * 1024 * 1024;
const DEFAULT_MAX_BIG = 8192;

/** Buffer's own native slicers (what `toString(enc, s, e)` calls after checking its arguments). */
interface Slicers {
  utf8Slice(start: number, end: number): string;
  latin1Slice(start: number, end: number): string;
}
const hasSlicers = typeof (Buffer.prototype as unknown as Partial<Slicers>).utf8Slice === 'function';

// The state of the one decode in progress.
let buf: Buffer = Buffer.alloc(0);
/** `buf` read four bytes at a time (to compare map keys with those of a known shape). */
let view: DataView<ArrayBufferLike> = new DataView(new ArrayBuffer(0));
let pos = 0;
let end = 0;
let maxDepth = DEFAULT_MAX_DEPTH;
let maxBig = DEFAULT_MAX_BIG;

/** Decode one complete term (version byte included). Throws `EtfError`. */
export function decode(input: Buffer, opts: DecodeOptions = {}): Term {
  if (input.length < 1) throw new EtfError('truncated', 'empty input', 0);
  if (input[0] !== VERSION) throw new EtfError('bad_version', `expected version byte 131, got ${input[0]}`, 0);
  let body = input;
  let start = 1;
  if (input.length > 1 && input[1] === TAG.COMPRESSED) {
    body = inflate(input, opts.maxDecompressedBytes ?? DEFAULT_MAX_DECOMPRESSED);
    start = 0;
  }
  // The decoder recurses; past a few thousand levels the JS stack would overflow first.
  maxDepth = Math.min(opts.maxDepth ?? DEFAULT_MAX_DEPTH, HARD_MAX_DEPTH);
  maxBig = opts.maxBigBytes ?? DEFAULT_MAX_BIG;
  buf = body;
  view = new DataView(body.buffer, body.byteOffset, body.length);
  pos = start;
  end = body.length;
  let result: Term;
  valueTop = 0;
  try {
    result = term(0);
  } catch (err) {
    values.fill(undefined as unknown as Term); // what the unfinished maps held
    if (err instanceof RangeError) throw new EtfError('too_deep', 'nesting too deep for the stack', pos);
    throw err;
  } finally {
    buf = EMPTY; // do not keep the caller's buffer alive
    view = EMPTY_VIEW;
  }
  if (pos !== end) throw new EtfError('trailing_bytes', `${end - pos} bytes after the term`, pos);
  return result;
}
const EMPTY = Buffer.alloc(0);
const EMPTY_VIEW = new DataView(new ArrayBuffer(0));

function inflate(input: Buffer, maxDecompressed: number): Buffer {
  if (input.length < 6) throw new EtfError('truncated', 'compressed term header cut short', 1);
  const size = input.readUInt32BE(2);
  if (size > maxDecompressed) throw new EtfError('too_large', `compressed term declares ${size} bytes, limit is ${maxDecompressed}`, 2);
  let inflated: Buffer;
  try {
    inflated = zlib.inflateSync(input.subarray(6), { maxOutputLength: Math.max(size, 1) });
  } catch (err) {
    throw new EtfError('bad_compressed', `compressed term does not inflate to ${size} bytes: ${(err as Error).message}`, 6);
  }
  if (inflated.length !== size) throw new EtfError('bad_compressed', `compressed term inflated to ${inflated.length} bytes, declared ${size}`, 6);
  return inflated;
}

// ---------------------------------------------------------------- reading primitives

function truncated(n: number): EtfError {
  return new EtfError('truncated', `need ${n} bytes, ${end - pos} left`, pos);
}
function u8(): number {
  if (pos >= end) throw truncated(1);
  return buf[pos++]!;
}
function u16(): number {
  if (end - pos < 2) throw truncated(2);
  const v = view.getUint16(pos);
  pos += 2;
  return v;
}
function u32(): number {
  if (end - pos < 4) throw truncated(4);
  const v = view.getUint32(pos);
  pos += 4;
  return v;
}
/** A declared count of items, each at least `minBytes` long: checked before anything is allocated. */
function count(n: number, minBytes: number, what: string): number {
  if (n * minBytes > end - pos) throw new EtfError('truncated', `${what} declares ${n} elements but only ${end - pos} bytes are left`, pos);
  return n;
}
function deeper(depth: number): number {
  if (depth + 1 > maxDepth) throw new EtfError('too_deep', `nesting deeper than ${maxDepth}`, pos);
  return depth + 1;
}

// ---------------------------------------------------------------- terms

function term(depth: number): Term {
  if (pos >= end) throw truncated(1);
  const start = pos;
  const tag = buf[pos++]!;
  // Numeric literals, not TAG.X: V8 turns a switch on dense small-integer literals into a jump table.
  switch (tag) {
    case 119: // SMALL_ATOM_UTF8
    case 115: // SMALL_ATOM
      return atomTerm(tag, u8(), start);
    case 118: // ATOM_UTF8
    case 100: // ATOM
      return atomTerm(tag, u16(), start);
    case 109: {
      // BINARY
      const n = u32();
      if (n > end - pos) throw truncated(n);
      const s = pos;
      pos += n;
      return binary(s, n);
    }
    case 97: // SMALL_INTEGER
      return u8();
    case 98: {
      // INTEGER
      if (end - pos < 4) throw truncated(4);
      const v = view.getInt32(pos);
      pos += 4;
      return v;
    }
    case 70: {
      // NEW_FLOAT
      if (end - pos < 8) throw truncated(8);
      const v = view.getFloat64(pos);
      pos += 8;
      if (v - v !== 0) throw new EtfError('bad_float', 'non-finite float', start);
      return new ErlFloat(v);
    }
    case 116: // MAP
      return map(depth);
    case 108: // LIST
      return list(depth);
    case 106: // NIL
      return [];
    case 104: // SMALL_TUPLE
      return tuple(u8(), depth);
    case 105: // LARGE_TUPLE
      return tuple(u32(), depth);
    case 107: {
      // STRING (a list of bytes)
      const n = u16();
      if (n > end - pos) throw truncated(n);
      const out = new Array<number>(n);
      for (let i = 0; i < n; i++) out[i] = buf[pos + i]!;
      pos += n;
      return out;
    }
    case 110: // SMALL_BIG
      return big(u8());
    case 111: // LARGE_BIG
      return big(u32());
    case 99: {
      // FLOAT (minor version 0: 31 bytes of text)
      if (end - pos < 31) throw truncated(31);
      const text = buf.toString('latin1', pos, pos + 31).replace(/\0.*$/s, '');
      pos += 31;
      const v = Number(text.trim());
      if (!Number.isFinite(v)) throw new EtfError('bad_float', `bad FLOAT_EXT text ${JSON.stringify(text)}`, start);
      return new ErlFloat(v);
    }
    case 77: {
      // BIT_BINARY
      const n = u32();
      const bits = u8();
      if (bits < 1 || bits > 8 || n === 0) throw new EtfError('unsupported', `BIT_BINARY_EXT with ${bits} bits in last byte of ${n}`, start);
      if (n > end - pos) throw truncated(n);
      const bytes = Buffer.from(buf.subarray(pos, pos + n));
      pos += n;
      return new BitBinary(bytes, bits);
    }
    case 88: // NEW_PID
      return opaque('pid', start, 12);
    case 103: // PID
      return opaque('pid', start, 9);
    case 89: // NEW_PORT
      return opaque('port', start, 8);
    case 120: // V4_PORT
      return opaque('port', start, 12);
    case 102: // PORT
      return opaque('port', start, 5);
    case 101: // REFERENCE
      return opaque('reference', start, 5);
    case 114: // NEW_REFERENCE
    case 90: {
      // NEWER_REFERENCE
      const len = u16();
      if (len > 5) throw new EtfError('unsupported', `reference with ${len} id words`, start);
      skipAtom();
      const n = (tag === TAG.NEWER_REFERENCE ? 4 : 1) + 4 * len;
      if (n > end - pos) throw truncated(n);
      pos += n;
      return new Opaque('reference', Buffer.from(buf.subarray(start, pos)));
    }
    case 112: // NEW_FUN
    case 117: // FUN
    case 113: // EXPORT
      throw new EtfError('unsupported', 'funs are not accepted', start);
    case 121: // LOCAL
      throw new EtfError('unsupported', 'LOCAL_EXT terms are not accepted', start);
    case 82: // ATOM_CACHE_REF
      throw new EtfError('unsupported', 'atom cache references are only valid in distribution', start);
    case 80: // COMPRESSED
      throw new EtfError('unsupported', 'a compressed term may only appear at the top', start);
    default:
      throw new EtfError('unknown_tag', `unknown tag ${tag}`, start);
  }
}

function opaque(kind: Opaque['kind'], start: number, fixedBytes: number): Opaque {
  skipAtom();
  if (fixedBytes > end - pos) throw truncated(fixedBytes);
  pos += fixedBytes;
  return new Opaque(kind, Buffer.from(buf.subarray(start, pos)));
}

function skipAtom(): void {
  const start = pos;
  const tag = u8();
  if (tag === TAG.SMALL_ATOM_UTF8 || tag === TAG.SMALL_ATOM) atomName(tag, u8(), start);
  else if (tag === TAG.ATOM_UTF8 || tag === TAG.ATOM) atomName(tag, u16(), start);
  else throw new EtfError('unsupported', `expected a node name atom, got tag ${tag}`, start);
}

function big(n: number): number | bigint {
  const start = pos - 1;
  if (n > maxBig) throw new EtfError('too_large', `integer of ${n} bytes, limit is ${maxBig}`, start);
  if (1 + n > end - pos) throw truncated(1 + n);
  const sign = buf[pos++]!;
  if (sign > 1) throw new EtfError('unsupported', `bad bignum sign byte ${sign}`, start);
  let v: number | bigint;
  if (n <= 6) {
    // Up to 48 bits: exact in a double, no BigInt needed.
    let m = 0;
    for (let i = n - 1; i >= 0; i--) m = m * 256 + buf[pos + i]!;
    v = sign === 1 && m !== 0 ? -m : m;
  } else {
    let b = 0n;
    for (let i = n - 1; i >= 0; i--) b = (b << 8n) | BigInt(buf[pos + i]!);
    if (sign === 1) b = -b;
    v = b >= BigInt(Number.MIN_SAFE_INTEGER) && b <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(b) : b;
  }
  pos += n;
  return v;
}

function tuple(n: number, depth: number): Tuple {
  count(n, 1, 'tuple');
  const d = deeper(depth);
  const items = new Array<Term>(n);
  for (let i = 0; i < n; i++) items[i] = term(d);
  return new Tuple(items);
}

function list(depth: number): Term[] | ImproperList {
  const n = count(u32(), 1, 'list');
  const d = deeper(depth);
  const items = new Array<Term>(n);
  // A list of maps (records) goes to map() without the tag switch.
  for (let i = 0; i < n; i++)
    if (pos < end && buf[pos] === 116) {
      pos++;
      items[i] = map(d);
    } else items[i] = term(d);
  if (pos < end && buf[pos] === TAG.NIL) {
    pos++;
    return items;
  }
  return new ImproperList(items, term(d));
}

// ---------------------------------------------------------------- binaries

const fromCharCode = String.fromCharCode;

/**
 * A BINARY_EXT body: a string when it is valid UTF-8, else a copy of the
 * bytes. Short ASCII binaries (up to 16 bytes: names, statuses, enum-like
 * values) come from a small string table, like the one V8's JSON.parse
 * keeps for short values, and ASCII binaries of up to 32 bytes from a
 * second one (mediumString: a native call costs ~60 ns whatever the length,
 * a table hit a fraction of that); anything else is one native UTF-8 decode. That
 * decode replaces each invalid sequence with U+FFFD, so a result without
 * U+FFFD proves the bytes valid; only a result holding one is checked again.
 */
function binary(s: number, n: number): string | Buffer {
  if (n <= SHORT_STRING) {
    const str = shortString(s, n);
    if (str !== undefined) return str;
  } else if (n <= MEDIUM_STRING) {
    const str = mediumString(s, n);
    if (str !== undefined) return str;
  }
  return utf8(s, n);
}

/** One native UTF-8 decode, kept small so that V8 inlines it where binaries are read. */
function utf8(s: number, n: number): string | Buffer {
  const b = buf;
  const str = hasSlicers ? (b as unknown as Slicers).utf8Slice(s, s + n) : b.toString('utf8', s, s + n);
  if (str.indexOf('\uFFFD') === -1) return str;
  const bytes = b.subarray(s, s + n);
  return isUtf8(bytes) ? str : Buffer.from(bytes);
}

/**
 * Short ASCII strings by their bytes: a fixed table of STRING_SLOTS slots
 * indexed by a hash of (up to) four 32-bit words covering the bytes, a new
 * string replacing whatever shared its slot. At most STRING_SLOTS strings
 * of at most SHORT_STRING characters are held, whatever a peer sends.
 */
const SHORT_STRING = 16;
const STRING_SLOTS = 4096;
const slotWords = new Int32Array(STRING_SLOTS * 4);
const slotLength = new Int8Array(STRING_SLOTS).fill(-1);
const slotString: string[] = new Array<string>(STRING_SLOTS).fill('');

/** The string of the `n` ≤ 16 bytes at `s` if they are ASCII, else undefined. */
function shortString(s: number, n: number): string | undefined {
  const dv = view;
  const b = buf;
  let w0 = 0;
  let w1 = 0;
  let w2 = 0;
  let w3 = 0;
  if (n >= 4) {
    // Whole words from the start, and the last four bytes as one word (overlapping those before):
    // together they cover every byte, and with n they determine the bytes. No byte loop.
    w0 = dv.getInt32(s);
    if (n > 8) w1 = dv.getInt32(s + 4);
    if (n > 12) w2 = dv.getInt32(s + 8);
    w3 = dv.getInt32(s + n - 4);
  } else for (let i = s; i < s + n; i++) w0 = (w0 << 8) | b[i]!;
  if (((w0 | w1 | w2 | w3) & 0x80808080) !== 0) return undefined;
  // Independent multiplies (not a chain): the four run side by side.
  let h = Math.imul(w0 ^ n, 0x9e3779b1) ^ Math.imul(w1, 0x85ebca6b) ^ Math.imul(w2, 0xc2b2ae35) ^ Math.imul(w3, 0x27d4eb2f);
  h ^= h >>> 15;
  const slot = (h ^ (h >>> 12)) & (STRING_SLOTS - 1);
  const at = slot * 4;
  if (slotLength[slot] === n && slotWords[at] === w0 && slotWords[at + 1] === w1 && slotWords[at + 2] === w2 && slotWords[at + 3] === w3) return slotString[slot]!;
  const str = n <= 8 ? shortAscii(b, s, n) : shortAscii(b, s, 8) + shortAscii(b, s + 8, n - 8);
  slotLength[slot] = n;
  slotWords[at] = w0;
  slotWords[at + 1] = w1;
  slotWords[at + 2] = w2;
  slotWords[at + 3] = w3;
  slotString[slot] = str;
  return str;
}

/**
 * ASCII strings of 17 to MEDIUM_STRING bytes (statuses, names, timestamps,
 * short sentences) by their bytes, as shortString does for shorter ones: a
 * table of MEDIUM_SLOTS slots, a new string replacing whatever shared its
 * slot, so at most MEDIUM_SLOTS strings of at most MEDIUM_STRING characters
 * are held. The bytes are read as eight 32-bit words: the first four, then
 * four more ending at the last byte (overlapping when n < 32), which
 * together cover every byte, so equal words and length mean equal bytes,
 * and the ASCII test sees every byte. A miss costs the hash on top of the
 * one native Latin-1 copy (equal to the UTF-8 decode for ASCII bytes).
 */
const MEDIUM_STRING = 32;
const MEDIUM_SLOTS = 2048;
const mediumWords = new Int32Array(MEDIUM_SLOTS * 8);
const mediumLength = new Int8Array(MEDIUM_SLOTS).fill(-1);
const mediumText: string[] = new Array<string>(MEDIUM_SLOTS).fill('');

/** The string of the 16 < `n` ≤ 32 bytes at `s` if they are ASCII, else undefined. */
function mediumString(s: number, n: number): string | undefined {
  const dv = view;
  const last = s + n - 4;
  const w0 = dv.getInt32(s);
  const w1 = dv.getInt32(s + 4);
  const w2 = dv.getInt32(s + 8);
  const w3 = dv.getInt32(s + 12);
  const w4 = dv.getInt32(Math.min(s + 16, last));
  const w5 = dv.getInt32(Math.min(s + 20, last));
  const w6 = dv.getInt32(Math.min(s + 24, last));
  const w7 = dv.getInt32(last);
  if (((w0 | w1 | w2 | w3 | w4 | w5 | w6 | w7) & 0x80808080) !== 0) return undefined;
  // Independent multiplies (not a chain), as in shortString.
  let h =
    Math.imul(w0 ^ n, 0x9e3779b1) ^
    Math.imul(w1, 0x85ebca6b) ^
    Math.imul(w2, 0xc2b2ae35) ^
    Math.imul(w3, 0x27d4eb2f) ^
    Math.imul(w4, 0x165667b1) ^
    Math.imul(w5, 0xd3a2646c) ^
    Math.imul(w6, 0xfd7046c5) ^
    Math.imul(w7, 0xb55a4f09);
  h ^= h >>> 15;
  const slot = (h ^ (h >>> 12)) & (MEDIUM_SLOTS - 1);
  const at = slot * 8;
  const words = mediumWords;
  if (
    mediumLength[slot] === n &&
    words[at] === w0 &&
    words[at + 1] === w1 &&
    words[at + 2] === w2 &&
    words[at + 3] === w3 &&
    words[at + 4] === w4 &&
    words[at + 5] === w5 &&
    words[at + 6] === w6 &&
    words[at + 7] === w7
  )
    return mediumText[slot]!;
  const str = hasSlicers ? (buf as unknown as Slicers).latin1Slice(s, s + n) : buf.toString('latin1', s, s + n);
  mediumLength[slot] = n;
  words[at] = w0;
  words[at + 1] = w1;
  words[at + 2] = w2;
  words[at + 3] = w3;
  words[at + 4] = w4;
  words[at + 5] = w5;
  words[at + 6] = w6;
  words[at + 7] = w7;
  mediumText[slot] = str;
  return str;
}

function shortAscii(b: Buffer, p: number, n: number): string {
  switch (n) {
    case 0:
      return '';
    case 1:
      return fromCharCode(b[p]!);
    case 2:
      return fromCharCode(b[p]!, b[p + 1]!);
    case 3:
      return fromCharCode(b[p]!, b[p + 1]!, b[p + 2]!);
    case 4:
      return fromCharCode(b[p]!, b[p + 1]!, b[p + 2]!, b[p + 3]!);
    case 5:
      return fromCharCode(b[p]!, b[p + 1]!, b[p + 2]!, b[p + 3]!, b[p + 4]!);
    case 6:
      return fromCharCode(b[p]!, b[p + 1]!, b[p + 2]!, b[p + 3]!, b[p + 4]!, b[p + 5]!);
    case 7:
      return fromCharCode(b[p]!, b[p + 1]!, b[p + 2]!, b[p + 3]!, b[p + 4]!, b[p + 5]!, b[p + 6]!);
    default:
      return fromCharCode(b[p]!, b[p + 1]!, b[p + 2]!, b[p + 3]!, b[p + 4]!, b[p + 5]!, b[p + 6]!, b[p + 7]!);
  }
}

// ---------------------------------------------------------------- atoms

/**
 * Atom names (and the term each stands for: an Atom, true, false or null)
 * by their bytes. The same few atoms (record field names, tags) arrive in
 * every frame; a hit hands back the interned string without building one.
 * A fixed table indexed by a hash of the bytes, a new name overwriting
 * whatever shared its slot: at most ATOM_SLOTS names of at most
 * MAX_CACHED_ATOM bytes, whatever a peer sends. Only ASCII names are kept
 * (then Latin-1 and UTF-8 agree, so one entry serves all four atom tags).
 */
const ATOM_SLOTS = 4096;
const MAX_CACHED_ATOM = 64;
const slotName: Array<string | undefined> = new Array<string | undefined>(ATOM_SLOTS).fill(undefined);
/** The term of each cached name, made when first needed (undefined until then): a name seen only as a map key never becomes an Atom. */
const slotTerm: Array<Atom | boolean | null | undefined> = new Array<Atom | boolean | null | undefined>(ATOM_SLOTS).fill(undefined);
/** Where atomName left the cache slot of the name it read (-1: not cacheable). */
let lastSlot = -1;

/** The name of an atom whose `n` bytes start at `pos`; advances past them. */
function atomName(tag: number, n: number, start: number): string {
  if (n > end - pos) throw truncated(n);
  const b = buf;
  const p = pos;
  if (n <= MAX_CACHED_ATOM) {
    let h = n;
    let or = 0;
    for (let i = p; i < p + n; i++) {
      const c = b[i]!;
      or |= c;
      h = (Math.imul(h, 31) + c) | 0;
    }
    if (or < 0x80) {
      const slot = (h ^ (h >>> 12)) & (ATOM_SLOTS - 1);
      lastSlot = slot;
      const cached = slotName[slot];
      if (cached !== undefined && cached.length === n) {
        let i = 0;
        while (i < n && cached.charCodeAt(i) === b[p + i]) i++;
        if (i === n) {
          pos = p + n;
          return cached;
        }
      }
      const name = n <= 8 ? shortAscii(b, p, n) : hasSlicers ? (b as unknown as Slicers).latin1Slice(p, p + n) : b.toString('latin1', p, p + n);
      slotName[slot] = name;
      slotTerm[slot] = undefined;
      pos = p + n;
      return name;
    }
  }
  lastSlot = -1;
  pos = p + n;
  const bytes = b.subarray(p, p + n);
  if (tag === TAG.ATOM || tag === TAG.SMALL_ATOM) return bytes.toString('latin1');
  if (!isUtf8(bytes)) throw new EtfError('bad_atom', 'atom is not valid UTF-8', start);
  const name = bytes.toString('utf8');
  if (n > 255 && [...name].length > 255) throw new EtfError('bad_atom', 'atom longer than 255 characters', start);
  return name;
}

function atomTerm(tag: number, n: number, start: number): Atom | boolean | null {
  const name = atomName(tag, n, start);
  if (lastSlot < 0) return atomValue(name);
  const cached = slotTerm[lastSlot];
  if (cached !== undefined) return cached;
  return (slotTerm[lastSlot] = atomValue(name));
}

function atomValue(name: string): Atom | boolean | null {
  if (name === 'true') return true;
  if (name === 'false') return false;
  if (name === 'nil') return null;
  return Atom.fromWire(name);
}

// ---------------------------------------------------------------- maps

/**
 * A map shape: the keys so far, in wire order, with which are atoms. Maps
 * decoded along the same chain of keys (every record of one kind) share
 * the shape's atom-key set instead of building one each, and V8 gives the
 * objects one hidden class. Bounded: at most MAX_SHAPES shapes (then the
 * tree starts again empty), of at most MAX_SHAPE_KEYS keys of at most
 * MAX_SHAPE_KEY characters; a map that leaves these bounds is finished by
 * the general path.
 */
class Shape {
  /** Up to KIDS_SCANNED of the shapes reached from this one, tried in turn by their key bytes. */
  readonly kids: Shape[] = [];
  /** Every shape reached from this one, by its key's name. */
  moreAtoms: Map<string, Shape> | undefined = undefined;
  moreBinaries: Map<string, Shape> | undefined = undefined;
  /** The last key's exact bytes on the wire (tag, length, name) as big-endian 32-bit words, a last partial word left out. */
  readonly keyWords: Int32Array;
  readonly keyLastWord: number;
  /** The kid the last map through this shape went on to: tried before the others (maps of one kind come in runs). */
  last: Shape | undefined = undefined;
  /** Maps that ended at this shape, until it has a builder. */
  uses = 0;
  build: Built | undefined = undefined;
  /** The shape this one extends (undefined for the root). */
  parent: Shape | undefined = undefined;
  constructor(
    readonly keys: readonly string[],
    readonly atomKeys: ReadonlySet<string> | undefined,
    /**
     * The key that leads here from the parent shape, and its exact bytes: a
     * map that repeats them is read by comparing bytes, without decoding or
     * hashing the key. Equal bytes decode to the equal key.
     */
    readonly keyName: string,
    readonly keyBytes: Uint8Array,
  ) {
    const k = keyBytes.length;
    const word = (at: number): number => (keyBytes[at]! << 24) | (keyBytes[at + 1]! << 16) | (keyBytes[at + 2]! << 8) | keyBytes[at + 3]!;
    const words = new Int32Array(k >> 2);
    for (let i = 0; i < words.length; i++) words[i] = word(4 * i);
    this.keyWords = words;
    // The last four bytes as one word (overlapping the words before) covers a partial last word.
    this.keyLastWord = k >= 4 && (k & 3) !== 0 ? word(k - 4) : 0;
  }
}
const MAX_SHAPES = 2048;
const MAX_SHAPE_KEYS = 32;
const MAX_SHAPE_KEY = 64;
const KIDS_SCANNED = 8;
let root = new Shape([], undefined, '', new Uint8Array(0));
let shapeCount = 0;
/**
 * By key count: the built shape the last map of that many keys ended at,
 * whose reader map() tries first (maps of one kind come in runs: a list of
 * records). A wrong guess costs one compare of the first key's bytes.
 */
const hotBySize: Array<Shape | undefined> = new Array<Shape | undefined>(MAX_SHAPE_KEYS + 1).fill(undefined);

/** Whether the bytes at `pos` are the key that leads to `kid`. */
function atKey(kid: Shape): boolean {
  const kb = kid.keyBytes;
  const k = kb.length;
  if (k > end - pos) return false;
  const w = kid.keyWords;
  const dv = view;
  const p = pos;
  for (let j = 0; j < w.length; j++) if (dv.getInt32(p + 4 * j) !== w[j]) return false;
  if ((k & 3) === 0) return true;
  if (k >= 4) return dv.getInt32(p + k - 4) === kid.keyLastWord;
  for (let j = 0; j < k; j++) if (buf[p + j] !== kb[j]) return false;
  return true;
}

/** The shape after `shape` when the next key is `name` (read from `keyStart`); undefined if none may be made. */
function extend(shape: Shape, name: string, isAtom: boolean, keyStart: number): Shape | undefined {
  const known = (isAtom ? shape.moreAtoms : shape.moreBinaries)?.get(name);
  if (known !== undefined) return known;
  if (shape.keys.length >= MAX_SHAPE_KEYS || name.length > MAX_SHAPE_KEY || shape.keys.includes(name)) return undefined;
  if (shapeCount >= MAX_SHAPES) {
    root = new Shape([], undefined, '', new Uint8Array(0));
    shapeCount = 0;
    hotBySize.fill(undefined);
    return undefined;
  }
  shapeCount++;
  let atomKeys = shape.atomKeys;
  if (isAtom) {
    const s = new Set(atomKeys);
    s.add(name);
    atomKeys = s;
  }
  const next = new Shape([...shape.keys, name], atomKeys, name, Uint8Array.from(buf.subarray(keyStart, pos)));
  next.parent = shape;
  if (shape.kids.length < KIDS_SCANNED) shape.kids.push(next);
  if (isAtom) (shape.moreAtoms ??= new Map()).set(name, next);
  else (shape.moreBinaries ??= new Map()).set(name, next);
  return next;
}

/** Set by mapKey: whether the key it returned as a string was an atom. */
let keyIsAtom = false;

/** A map key: the name of an atom key, or the key term (a string when a UTF-8 binary). */
function mapKey(d: number): Term {
  const start = pos;
  const kt = pos < end ? buf[pos]! : -1;
  if (kt === 119 || kt === 115) {
    // SMALL_ATOM_UTF8, SMALL_ATOM
    pos++;
    keyIsAtom = true;
    return atomName(kt, u8(), start);
  }
  if (kt === 118 || kt === 100) {
    // ATOM_UTF8, ATOM
    pos++;
    keyIsAtom = true;
    return atomName(kt, u16(), start);
  }
  keyIsAtom = false;
  return term(d);
}

/** A map value: the commonest scalars read here, anything else by term(). */
function value(d: number): Term {
  if (end - pos >= 5) {
    const tag = buf[pos]!;
    if (tag === 109) {
      // BINARY
      const n = view.getUint32(pos + 1);
      if (n <= end - pos - 5) {
        const s = pos + 5;
        pos = s + n;
        return n > MEDIUM_STRING ? utf8(s, n) : binary(s, n);
      }
    } else if (tag === 97) {
      // SMALL_INTEGER
      pos += 2;
      return buf[pos - 1]!;
    } else if (tag === 70 && end - pos >= 9) {
      // NEW_FLOAT
      const v = view.getFloat64(pos + 1);
      if (v - v === 0) {
        pos += 9;
        return new ErlFloat(v);
      }
    } else if (tag === 116) {
      // MAP
      pos++;
      return map(d);
    }
  }
  return term(d);
}

/**
 * Builders: for a shape that many maps end at (a protocol record), a
 * constructor that makes the object with one store per key written out by
 * name, which V8 compiles to direct stores into a fixed layout where
 * `obj[name] = value` with a different name each time is a lookup (the
 * technique of msgpackr's record reader), and beside it a reader for the
 * whole map (see Built). Compiled from the shape's keys with `new
 * Function`; each key appears in the source only as a string literal made
 * by JSON.stringify, and its wire bytes only as integer literals, so no key
 * can be anything but a property name. Bounded: a shape gets a builder
 * after BUILD_AFTER maps, and at most MAX_BUILDERS are ever compiled. Where
 * code generation is refused (`--disallow-code-generation-from-strings`),
 * maps are built key by key.
 */
interface Built {
  /** The map from the n values at values[at..]: the generic path's end. */
  make(values: Term[], at: number): TermObject;
  /**
   * The whole map, its header read and `pos` at its first key: each key's
   * wire bytes compared in turn with the shape's (literals in the code),
   * each value read into a local, and the object made by one monomorphic
   * `new` of the constructor, which V8 inlines; no kid is searched and no
   * value goes through the values stack. On the first key that differs it
   * stores the values read so far at values[at..], sets missAt to the
   * number of keys matched, and returns MISS: `pos` is then at that key,
   * and map() goes on from there along `path`, so nothing read is lost.
   */
  read(d: number, at: number): TermObject;
  /** The shapes after each key, path[i] after key i (path[n - 1] is the shape itself). */
  path: Shape[];
}
/** The values of the maps being decoded, until their objects are made (a stack: a nested map takes the slots after its parent's). */
const values: Term[] = [];
let valueTop = 0;
const BUILD_AFTER = 32;
const MAX_BUILDERS = 512;
let buildersMade = 0;
let codegen = true;
/** What a reader returns when a key differs from its shape's (a value no map is). */
const MISS: TermObject = newMap();
let missAt = 0;
/** What the generated code reaches the decoder's state through (small closures, which V8 inlines into each reader). */
const runtime = {
  value: (d: number): Term => value(d),
  pos: (): number => pos,
  setPos: (p: number): void => {
    pos = p;
  },
  left: (): number => end - pos,
  view: (): DataView => view,
  buf: (): Buffer => buf,
  values,
  miss: (i: number): TermObject => {
    missAt = i;
    return MISS;
  },
};

function compileBuilder(shape: Shape): Built | undefined {
  if (!codegen || buildersMade >= MAX_BUILDERS) return undefined;
  buildersMade++;
  const keys = shape.keys;
  const n = keys.length;
  const path: Shape[] = new Array<Shape>(n);
  for (let s: Shape | undefined = shape, i = n - 1; i >= 0 && s !== undefined; s = s.parent, i--) path[i] = s;
  const vars = keys.map((_, i) => `v${i}`);
  const stores = keys.map((k, i) => `this[${JSON.stringify(k)}] = v${i};`).join(' ');
  const reads = path.map((kid, i) => {
    const k = kid.keyBytes.length;
    const tests = [`left() < ${k}`];
    kid.keyWords.forEach((w, j) => tests.push(`dv.getInt32(p + ${4 * j}) !== ${w}`));
    if (k >= 4 && (k & 3) !== 0) tests.push(`dv.getInt32(p + ${k - 4}) !== ${kid.keyLastWord}`);
    if (k < 4) kid.keyBytes.forEach((c, j) => tests.push(`b[p + ${j}] !== ${c}`));
    const saved = vars.slice(0, i).map((v, j) => `vs[a + ${j}] = ${v};`).join(' ');
    return `p = getPos(); if (${tests.join(' || ')}) { ${saved} return miss(${i}); } setPos(p + ${k}); const v${i} = value(d);`;
  });
  const src = `'use strict';
const value = rt.value, getPos = rt.pos, setPos = rt.setPos, left = rt.left, getView = rt.view, getBuf = rt.buf, vs = rt.values, miss = rt.miss;
function B(${vars.join(', ')}) { ${stores} }
B.prototype = proto;
return {
  make: function (v, a) { return new B(${vars.map((_, i) => `v[a + ${i}]`).join(', ')}); },
  read: function (d, a) { const dv = getView(); const b = getBuf(); let p = 0; ${reads.join(' ')} return new B(${vars.join(', ')}); },
};`;
  try {
    // A constructor, not a function returning a literal: `new` of a function whose prototype is MAP_PROTO is what makes a map fast (see MAP_PROTO).
    // The shape's atom keys ride on the prototype: a built map needs no stamp of its own.
    const proto = shape.atomKeys !== undefined ? mapPrototypeWithAtomKeys(shape.atomKeys) : MAP_PROTO;
    const made = (new Function('rt', 'proto', src) as (rt: typeof runtime, proto: object) => Omit<Built, 'path'>)(runtime, proto);
    return { make: made.make, read: made.read, path };
  } catch {
    codegen = false;
    return undefined;
  }
}

/**
 * The object of a map whose first `count` keys and values are known: a
 * map inheriting nothing (newMap), so even a `__proto__` key lands as a
 * plain own property.
 */
function newObject(keys: readonly string[], count: number, at: number): TermObject {
  const obj = newMap();
  for (let j = 0; j < count; j++) obj[keys[j]!] = values[at + j]!;
  return obj;
}


function release(at: number, n: number): void {
  for (let j = at; j < at + n; j++) values[j] = undefined as unknown as Term;
  valueTop = at;
}

function map(depth: number): TermObject | TermMap {
  const n = count(u32(), 2, 'map');
  const d = deeper(depth);
  if (n > MAX_SHAPE_KEYS) return mapRest(newObject([], 0, 0), undefined, 0, n, d, mapKey(d), keyIsAtom);
  const at = valueTop;
  valueTop = at + n;
  let shape = root;
  let i = 0;
  const hot = hotBySize[n];
  if (hot !== undefined) {
    const built = hot.build!;
    const made = built.read(d, at);
    if (made !== MISS) {
      valueTop = at;
      return made;
    }
    i = missAt;
    if (i > 0) shape = built.path[i - 1]!;
  }
  for (; i < n; i++) {
    // A key seen after this shape before? Compare bytes.
    let kid = shape.last;
    if (kid === undefined || !atKey(kid)) {
      kid = undefined;
      const kids = shape.kids;
      for (let c = 0; c < kids.length; c++)
        if (atKey(kids[c]!)) {
          kid = shape.last = kids[c]!;
          break;
        }
    }
    if (kid !== undefined) pos += kid.keyBytes.length;
    else {
      const keyStart = pos;
      const key = mapKey(d);
      const isAtom = keyIsAtom;
      kid = typeof key === 'string' ? extend(shape, key, isAtom, keyStart) : undefined;
      if (kid === undefined) {
        const obj = newObject(shape.keys, i, at);
        release(at, i);
        return mapRest(obj, shape.atomKeys, i, n, d, key, isAtom);
      }
    }
    values[at + i] = value(d);
    shape = kid;
  }
  let build = shape.build;
  if (build === undefined && ++shape.uses >= BUILD_AFTER) build = shape.build = compileBuilder(shape);
  if (build !== undefined) {
    const built = build.make(values, at);
    release(at, n);
    hotBySize[n] = shape;
    return built;
  }
  const obj = newObject(shape.keys, n, at);
  release(at, n);
  if (shape.atomKeys !== undefined) initAtomKeys(obj, shape.atomKeys);
  return obj;
}

/**
 * The general path, from pair `i` on, whose key `first` is already read
 * (`firstIsAtom`: an atom's name): checks each key against those before, and
 * turns the map into a TermMap on a key that is not an atom or a string, or
 * when an atom and a binary share a text.
 */
function mapRest(obj: TermObject, shapeAtoms: ReadonlySet<string> | undefined, i: number, n: number, d: number, first: Term, firstIsAtom: boolean): TermObject | TermMap {
  const atomKeys = new Set(shapeAtoms);
  let key: Term | undefined = first;
  let isAtom = firstIsAtom;
  let entries: Array<[Term, Term]> | undefined;
  for (; i < n; i++) {
    if (entries !== undefined) {
      const k = term(d);
      entries.push([k, term(d)]);
      continue;
    }
    if (key === undefined) {
      key = mapKey(d);
      isAtom = keyIsAtom;
    }
    const k = key;
    key = undefined;
    if (typeof k !== 'string') {
      entries = toEntries(obj, atomKeys);
      entries.push([k, term(d)]);
      continue;
    }
    const value = term(d);
    if (!(k in obj)) {
      obj[k] = value;
      if (isAtom) atomKeys.add(k);
      continue;
    }
    // An atom and a binary with the same text: keep the exact keys in a TermMap.
    entries = toEntries(obj, atomKeys);
    entries.push([isAtom ? atomValue(k) : k, value]);
  }
  if (entries !== undefined) return new TermMap(entries);
  if (atomKeys.size > 0) initAtomKeys(obj, atomKeys);
  return obj;
}

function toEntries(obj: TermObject, atomKeys: Set<string>): Array<[Term, Term]> {
  return Object.keys(obj).map((name): [Term, Term] => [atomKeys.has(name) ? atomValue(name) : name, obj[name]!]);
}
