/**
 * The codec part: Erlang External Term Format (version 131) ⇄ the term
 * mapping of docs/protocol.md (see terms.ts). Knows nothing of ops or
 * transports.
 *
 * Written by hand because every ETF codec on npm gets part of the mapping
 * wrong (erlang_js truncates integers beyond 2^31 and sends strings as
 * Latin-1 charlists; erlpack rejects OTP 26 atoms, pids and refs) and none
 * is safe on hostile input. Encoding follows `term_to_binary/1` with
 * `{minor_version, 2}` byte for byte for the types we produce (atoms as
 * 118/119, integers as 97/98/110/111, floats as 70, small maps in term
 * order).
 *
 * Decoder safety: every declared length is checked against the bytes left
 * before anything is allocated, nesting depth and decompressed size are
 * bounded, trailing bytes are an error, and map keys land on
 * null-prototype objects only.
 */
import { isUtf8 } from 'node:buffer';
import zlib from 'node:zlib';
import {
  Atom,
  BitBinary,
  ErlFloat,
  ImproperList,
  Opaque,
  TermMap,
  Tuple,
  atomKeysOf,
  isTermObject,
  setAtomKeys,
  type Term,
  type TermObject,
} from './terms.js';

export const VERSION = 131;

const TAG = {
  NEW_FLOAT: 70,
  BIT_BINARY: 77,
  COMPRESSED: 80,
  ATOM_CACHE_REF: 82,
  NEW_PID: 88,
  NEW_PORT: 89,
  NEWER_REFERENCE: 90,
  SMALL_INTEGER: 97,
  INTEGER: 98,
  FLOAT: 99,
  ATOM: 100,
  REFERENCE: 101,
  PORT: 102,
  PID: 103,
  SMALL_TUPLE: 104,
  LARGE_TUPLE: 105,
  NIL: 106,
  STRING: 107,
  LIST: 108,
  BINARY: 109,
  SMALL_BIG: 110,
  LARGE_BIG: 111,
  NEW_FUN: 112,
  EXPORT: 113,
  NEW_REFERENCE: 114,
  SMALL_ATOM: 115,
  MAP: 116,
  FUN: 117,
  ATOM_UTF8: 118,
  SMALL_ATOM_UTF8: 119,
  V4_PORT: 120,
  LOCAL: 121,
} as const;

export type EtfErrorCode =
  | 'truncated'
  | 'bad_version'
  | 'unknown_tag'
  | 'unsupported'
  | 'too_deep'
  | 'too_large'
  | 'trailing_bytes'
  | 'bad_float'
  | 'bad_atom'
  | 'bad_compressed'
  | 'unencodable';

/** A typed codec failure: `code` says what, `offset` where (decode only). */
export class EtfError extends Error {
  constructor(
    readonly code: EtfErrorCode,
    message: string,
    readonly offset?: number,
  ) {
    super(offset === undefined ? message : `${message} (at byte ${offset})`);
    this.name = 'EtfError';
  }
}

export interface DecodeOptions {
  /** Deepest nesting of lists/tuples/maps accepted. Default 512, at most 2048. */
  maxDepth?: number;
  /** Largest accepted uncompressed size of a compressed term. Default 64 MiB. */
  maxDecompressedBytes?: number;
  /** Largest accepted bignum, in bytes. Default 8192 (a 65,536-bit integer). */
  maxBigBytes?: number;
}

const DEFAULT_MAX_DEPTH = 512;
const HARD_MAX_DEPTH = 2048;
const DEFAULT_MAX_DECOMPRESSED = 64 * 1024 * 1024;
const DEFAULT_MAX_BIG = 8192;

/** Decode one complete term (version byte included). Throws `EtfError`. */
export function decode(buf: Buffer, opts: DecodeOptions = {}): Term {
  if (buf.length < 1) throw new EtfError('truncated', 'empty input', 0);
  if (buf[0] !== VERSION) throw new EtfError('bad_version', `expected version byte 131, got ${buf[0]}`, 0);
  const maxDecompressed = opts.maxDecompressedBytes ?? DEFAULT_MAX_DECOMPRESSED;
  let body = buf;
  let pos = 1;
  if (buf.length > 1 && buf[1] === TAG.COMPRESSED) {
    if (buf.length < 6) throw new EtfError('truncated', 'compressed term header cut short', 1);
    const size = buf.readUInt32BE(2);
    if (size > maxDecompressed) throw new EtfError('too_large', `compressed term declares ${size} bytes, limit is ${maxDecompressed}`, 2);
    let inflated: Buffer;
    try {
      inflated = zlib.inflateSync(buf.subarray(6), { maxOutputLength: Math.max(size, 1) });
    } catch (err) {
      throw new EtfError('bad_compressed', `compressed term does not inflate to ${size} bytes: ${(err as Error).message}`, 6);
    }
    if (inflated.length !== size) throw new EtfError('bad_compressed', `compressed term inflated to ${inflated.length} bytes, declared ${size}`, 6);
    body = inflated;
    pos = 0;
  }
  // The decoder recurses; past a few thousand levels the JS stack would overflow first.
  const maxDepth = Math.min(opts.maxDepth ?? DEFAULT_MAX_DEPTH, HARD_MAX_DEPTH);
  const d = new Decoder(body, pos, maxDepth, opts.maxBigBytes ?? DEFAULT_MAX_BIG);
  let term: Term;
  try {
    term = d.term(0);
  } catch (err) {
    if (err instanceof RangeError) throw new EtfError('too_deep', 'nesting too deep for the stack', d.pos);
    throw err;
  }
  if (d.pos !== body.length) throw new EtfError('trailing_bytes', `${body.length - d.pos} bytes after the term`, d.pos);
  return term;
}

class Decoder {
  constructor(
    readonly buf: Buffer,
    public pos: number,
    readonly maxDepth: number,
    readonly maxBig: number,
  ) {}

  private need(n: number): void {
    if (n > this.buf.length - this.pos) throw new EtfError('truncated', `need ${n} bytes, ${this.buf.length - this.pos} left`, this.pos);
  }
  private u8(): number {
    this.need(1);
    return this.buf[this.pos++]!;
  }
  private u16(): number {
    this.need(2);
    const v = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  private u32(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  /** A declared count of items, each at least `minBytes` long: checked before anything is allocated. */
  private count(n: number, minBytes: number, what: string): number {
    if (n * minBytes > this.buf.length - this.pos)
      throw new EtfError('truncated', `${what} declares ${n} elements but only ${this.buf.length - this.pos} bytes are left`, this.pos);
    return n;
  }

  term(depth: number): Term {
    const start = this.pos;
    const tag = this.u8();
    switch (tag) {
      case TAG.SMALL_INTEGER:
        return this.u8();
      case TAG.INTEGER: {
        this.need(4);
        const v = this.buf.readInt32BE(this.pos);
        this.pos += 4;
        return v;
      }
      case TAG.SMALL_BIG:
        return this.big(this.u8());
      case TAG.LARGE_BIG:
        return this.big(this.u32());
      case TAG.NEW_FLOAT: {
        this.need(8);
        const v = this.buf.readDoubleBE(this.pos);
        this.pos += 8;
        if (!Number.isFinite(v)) throw new EtfError('bad_float', 'non-finite float', start);
        return new ErlFloat(v);
      }
      case TAG.FLOAT: {
        this.need(31);
        const text = this.buf.toString('latin1', this.pos, this.pos + 31).replace(/\0.*$/s, '');
        this.pos += 31;
        const v = Number(text.trim());
        if (!Number.isFinite(v)) throw new EtfError('bad_float', `bad FLOAT_EXT text ${JSON.stringify(text)}`, start);
        return new ErlFloat(v);
      }
      case TAG.ATOM:
      case TAG.SMALL_ATOM:
      case TAG.ATOM_UTF8:
      case TAG.SMALL_ATOM_UTF8:
        return atomValue(this.atomName(tag, start));
      case TAG.SMALL_TUPLE:
        return this.tuple(this.u8(), depth);
      case TAG.LARGE_TUPLE:
        return this.tuple(this.u32(), depth);
      case TAG.NIL:
        return [];
      case TAG.STRING: {
        const n = this.u16();
        this.need(n);
        const out = new Array<number>(n);
        for (let i = 0; i < n; i++) out[i] = this.buf[this.pos + i]!;
        this.pos += n;
        return out;
      }
      case TAG.LIST:
        return this.list(depth);
      case TAG.BINARY: {
        const n = this.u32();
        this.need(n);
        const start = this.pos;
        this.pos += n;
        const ascii = n <= SHORT ? asciiString(this.buf, start, n) : undefined;
        if (ascii !== undefined) return ascii;
        const bytes = this.buf.subarray(start, start + n);
        return isUtf8(bytes) ? bytes.toString('utf8') : Buffer.from(bytes);
      }
      case TAG.BIT_BINARY: {
        const n = this.u32();
        const bits = this.u8();
        if (bits < 1 || bits > 8 || n === 0) throw new EtfError('unsupported', `BIT_BINARY_EXT with ${bits} bits in last byte of ${n}`, start);
        this.need(n);
        const bytes = Buffer.from(this.buf.subarray(this.pos, this.pos + n));
        this.pos += n;
        return new BitBinary(bytes, bits);
      }
      case TAG.MAP:
        return this.map(depth);
      case TAG.NEW_PID:
        return this.opaque('pid', start, 12);
      case TAG.PID:
        return this.opaque('pid', start, 9);
      case TAG.NEW_PORT:
        return this.opaque('port', start, 8);
      case TAG.V4_PORT:
        return this.opaque('port', start, 12);
      case TAG.PORT:
        return this.opaque('port', start, 5);
      case TAG.REFERENCE:
        return this.opaque('reference', start, 5);
      case TAG.NEW_REFERENCE:
      case TAG.NEWER_REFERENCE: {
        const len = this.u16();
        if (len > 5) throw new EtfError('unsupported', `reference with ${len} id words`, start);
        this.skipAtom();
        const creation = tag === TAG.NEWER_REFERENCE ? 4 : 1;
        this.need(creation + 4 * len);
        this.pos += creation + 4 * len;
        return new Opaque('reference', Buffer.from(this.buf.subarray(start, this.pos)));
      }
      case TAG.NEW_FUN:
      case TAG.FUN:
      case TAG.EXPORT:
        throw new EtfError('unsupported', 'funs are not accepted', start);
      case TAG.LOCAL:
        throw new EtfError('unsupported', 'LOCAL_EXT terms are not accepted', start);
      case TAG.ATOM_CACHE_REF:
        throw new EtfError('unsupported', 'atom cache references are only valid in distribution', start);
      case TAG.COMPRESSED:
        throw new EtfError('unsupported', 'a compressed term may only appear at the top', start);
      default:
        throw new EtfError('unknown_tag', `unknown tag ${tag}`, start);
    }
  }

  private atomName(tag: number, start: number): string {
    const n = tag === TAG.ATOM || tag === TAG.ATOM_UTF8 ? this.u16() : this.u8();
    this.need(n);
    const cached = cachedAtomName(this.buf, this.pos, n);
    if (cached !== undefined) {
      this.pos += n;
      return cached;
    }
    const bytes = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    if (tag === TAG.ATOM || tag === TAG.SMALL_ATOM) return bytes.toString('latin1');
    if (!isUtf8(bytes)) throw new EtfError('bad_atom', 'atom is not valid UTF-8', start);
    const name = bytes.toString('utf8');
    if (n > 255 && [...name].length > 255) throw new EtfError('bad_atom', 'atom longer than 255 characters', start);
    return name;
  }

  private skipAtom(): void {
    const start = this.pos;
    const tag = this.u8();
    if (tag !== TAG.ATOM && tag !== TAG.SMALL_ATOM && tag !== TAG.ATOM_UTF8 && tag !== TAG.SMALL_ATOM_UTF8)
      throw new EtfError('unsupported', `expected a node name atom, got tag ${tag}`, start);
    this.atomName(tag, start);
  }

  private opaque(kind: Opaque['kind'], start: number, fixedBytes: number): Opaque {
    this.skipAtom();
    this.need(fixedBytes);
    this.pos += fixedBytes;
    return new Opaque(kind, Buffer.from(this.buf.subarray(start, this.pos)));
  }

  private big(n: number): number | bigint {
    const start = this.pos - 1;
    if (n > this.maxBig) throw new EtfError('too_large', `integer of ${n} bytes, limit is ${this.maxBig}`, start);
    this.need(1 + n);
    const sign = this.buf[this.pos++]!;
    if (sign > 1) throw new EtfError('unsupported', `bad bignum sign byte ${sign}`, start);
    let v = 0n;
    for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(this.buf[this.pos + i]!);
    this.pos += n;
    if (sign === 1) v = -v;
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }

  private deeper(depth: number): number {
    if (depth + 1 > this.maxDepth) throw new EtfError('too_deep', `nesting deeper than ${this.maxDepth}`, this.pos);
    return depth + 1;
  }

  private tuple(n: number, depth: number): Tuple {
    this.count(n, 1, 'tuple');
    const d = this.deeper(depth);
    const items = new Array<Term>(n);
    for (let i = 0; i < n; i++) items[i] = this.term(d);
    return new Tuple(items);
  }

  private list(depth: number): Term[] | ImproperList {
    const n = this.count(this.u32(), 1, 'list');
    const d = this.deeper(depth);
    const items = new Array<Term>(n);
    for (let i = 0; i < n; i++) items[i] = this.term(d);
    if (this.buf[this.pos] === TAG.NIL) {
      this.pos++;
      return items;
    }
    return new ImproperList(items, this.term(d));
  }

  private map(depth: number): TermObject | TermMap {
    const n = this.count(this.u32(), 2, 'map');
    const d = this.deeper(depth);
    const obj = Object.create(null) as TermObject;
    let atomKeys: Set<string> | undefined;
    let entries: Array<[Term, Term]> | undefined;
    for (let i = 0; i < n; i++) {
      if (entries !== undefined) {
        const key = this.term(d);
        entries.push([key, this.term(d)]);
        continue;
      }
      // Atom and binary keys become property names without building Atom values.
      const keyStart = this.pos;
      const keyTag = this.buf[this.pos];
      let name: string | undefined;
      let isAtom = false;
      if (keyTag === TAG.SMALL_ATOM_UTF8 || keyTag === TAG.ATOM_UTF8 || keyTag === TAG.SMALL_ATOM || keyTag === TAG.ATOM) {
        this.pos++;
        name = this.atomName(keyTag, keyStart);
        isAtom = true;
      } else {
        const key = this.term(d);
        if (typeof key === 'string') name = key;
        else {
          entries = this.toEntries(obj, atomKeys);
          entries.push([key, this.term(d)]);
          continue;
        }
      }
      const value = this.term(d);
      if (!(name in obj)) {
        // obj has a null prototype: there is no inherited `__proto__` setter, so even that key
        // lands as a plain own property and no key can reach a prototype.
        obj[name] = value;
        if (isAtom) (atomKeys ??= new Set()).add(name);
        continue;
      }
      // An atom and a binary with the same text: keep the exact keys in a TermMap.
      entries = this.toEntries(obj, atomKeys);
      entries.push([isAtom ? atomValue(name) : name, value]);
    }
    if (entries !== undefined) return new TermMap(entries);
    if (atomKeys !== undefined) setAtomKeys(obj, atomKeys);
    return obj;
  }

  private toEntries(obj: TermObject, atomKeys: Set<string> | undefined): Array<[Term, Term]> {
    return Object.keys(obj).map((name): [Term, Term] => [atomKeys?.has(name) ? atomValue(name) : name, obj[name]!]);
  }
}

/**
 * Atom names by their bytes. The same few atoms (field names, tags) arrive in
 * every frame; handing back one interned string per name saves building and
 * re-hashing a fresh string for every map key. Bounded: the BEAM's atom table
 * is finite, but a hostile peer could send many names, so only the first
 * 4,096 distinct ASCII names are kept.
 */
const atomNames = new Map<number, { bytes: Uint8Array; name: string }>();
const MAX_CACHED_ATOMS = 4096;

function cachedAtomName(buf: Buffer, start: number, n: number): string | undefined {
  if (n > SHORT) return undefined;
  let h = 2166136261 ^ n;
  for (let i = start; i < start + n; i++) {
    const c = buf[i]!;
    if (c > 0x7f) return undefined;
    h = Math.imul(h ^ c, 16777619);
  }
  const hit = atomNames.get(h);
  if (hit !== undefined && hit.bytes.length === n) {
    let same = true;
    for (let i = 0; i < n; i++) if (hit.bytes[i] !== buf[start + i]) same = false;
    if (same) return hit.name;
  }
  const name = asciiString(buf, start, n)!;
  if (atomNames.size < MAX_CACHED_ATOMS && hit === undefined) atomNames.set(h, { bytes: Uint8Array.from(buf.subarray(start, start + n)), name });
  return name;
}

/** Below this many bytes, decoding ASCII in JS beats a call into Buffer's native toString. */
const SHORT = 64;

/** The bytes as a string when they are all ASCII (then UTF-8 and Latin-1 agree), else undefined. */
function asciiString(buf: Buffer, start: number, n: number): string | undefined {
  if (n > SHORT) return undefined;
  let s = '';
  for (let i = start; i < start + n; i++) {
    const c = buf[i]!;
    if (c > 0x7f) return undefined;
    s += String.fromCharCode(c);
  }
  return s;
}

function atomValue(name: string): Atom | boolean | null {
  if (name === 'true') return true;
  if (name === 'false') return false;
  if (name === 'nil') return null;
  return Atom.of(name);
}

// ---------------------------------------------------------------- encoding

export interface EncodeOptions {
  /** Compress (tag 80) when the encoded term is larger than this many bytes. Off by default. */
  compressAbove?: number;
  /** Deepest nesting produced. Default 512. */
  maxDepth?: number;
}

/** Encode one term with the version byte. Throws `EtfError('unencodable')` for values with no Erlang form. */
export function encode(term: Term, opts: EncodeOptions = {}): Buffer {
  const w = new Writer(256);
  w.u8(VERSION);
  encodeTerm(w, term, 0, opts.maxDepth ?? DEFAULT_MAX_DEPTH);
  const out = w.result();
  if (opts.compressAbove !== undefined && out.length > opts.compressAbove) {
    const body = out.subarray(1);
    const z = zlib.deflateSync(body);
    if (z.length + 6 < out.length) {
      const c = Buffer.allocUnsafe(6 + z.length);
      c[0] = VERSION;
      c[1] = TAG.COMPRESSED;
      c.writeUInt32BE(body.length, 2);
      z.copy(c, 6);
      return c;
    }
  }
  return out;
}

class Writer {
  buf: Buffer;
  pos = 0;
  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }
  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }
  u8(v: number): void {
    this.ensure(1);
    this.buf[this.pos++] = v;
  }
  u16(v: number): void {
    this.ensure(2);
    this.buf.writeUInt16BE(v, this.pos);
    this.pos += 2;
  }
  u32(v: number): void {
    this.ensure(4);
    this.buf.writeUInt32BE(v, this.pos);
    this.pos += 4;
  }
  bytes(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  result(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}

function encodeTerm(w: Writer, t: Term, depth: number, maxDepth: number): void {
  switch (typeof t) {
    case 'string':
      return encodeString(w, t);
    case 'number':
      return Number.isInteger(t) ? encodeInteger(w, t) : encodeFloat(w, t);
    case 'boolean':
      return encodeAtom(w, t ? 'true' : 'false');
    case 'bigint':
      return encodeBigInt(w, t);
    case 'object':
      break;
    default:
      throw new EtfError('unencodable', `cannot encode a ${typeof t}`);
  }
  if (t === null) return encodeAtom(w, 'nil');
  if (depth >= maxDepth) throw new EtfError('unencodable', `nesting deeper than ${maxDepth}`);
  if (t instanceof Atom) return encodeAtom(w, t.name);
  if (t instanceof ErlFloat) return encodeFloat(w, t.value);
  if (Array.isArray(t)) return encodeList(w, t, depth, maxDepth);
  if (Buffer.isBuffer(t)) {
    w.u8(TAG.BINARY);
    w.u32(t.length);
    return w.bytes(t);
  }
  if (t instanceof Tuple) {
    const n = t.items.length;
    if (n < 256) {
      w.u8(TAG.SMALL_TUPLE);
      w.u8(n);
    } else {
      w.u8(TAG.LARGE_TUPLE);
      w.u32(n);
    }
    for (const it of t.items) encodeTerm(w, it, depth + 1, maxDepth);
    return;
  }
  if (t instanceof Opaque) return w.bytes(t.bytes);
  if (t instanceof ImproperList) {
    w.u8(TAG.LIST);
    w.u32(t.items.length);
    for (const it of t.items) encodeTerm(w, it, depth + 1, maxDepth);
    return encodeTerm(w, t.tail, depth + 1, maxDepth);
  }
  if (t instanceof BitBinary) {
    w.u8(TAG.BIT_BINARY);
    w.u32(t.bytes.length);
    w.u8(t.bits);
    return w.bytes(t.bytes);
  }
  if (t instanceof TermMap) return encodeTermMap(w, t, depth, maxDepth);
  if (t instanceof Uint8Array) {
    w.u8(TAG.BINARY);
    w.u32(t.length);
    return w.bytes(t);
  }
  if (isTermObject(t)) return encodeObject(w, t, depth, maxDepth);
  throw new EtfError('unencodable', `cannot encode an instance of ${(t as object).constructor?.name ?? 'unknown'}`);
}

function encodeString(w: Writer, s: string): void {
  if (s.length <= SHORT && writeAsciiBinary(w, s)) return;
  const n = Buffer.byteLength(s, 'utf8');
  w.ensure(5 + n);
  w.buf[w.pos++] = TAG.BINARY;
  w.buf.writeUInt32BE(n, w.pos);
  w.pos += 4;
  w.pos += w.buf.write(s, w.pos, 'utf8');
}

/** BINARY_EXT of an ASCII string, written byte by byte; false (nothing written) if `s` is not ASCII. */
function writeAsciiBinary(w: Writer, s: string): boolean {
  const n = s.length;
  for (let i = 0; i < n; i++) if (s.charCodeAt(i) > 0x7f) return false;
  w.ensure(5 + n);
  const buf = w.buf;
  let p = w.pos;
  buf[p++] = TAG.BINARY;
  buf[p++] = 0;
  buf[p++] = 0;
  buf[p++] = 0;
  buf[p++] = n;
  for (let i = 0; i < n; i++) buf[p++] = s.charCodeAt(i);
  w.pos = p;
  return true;
}

function encodeAtom(w: Writer, name: string): void {
  const n = Buffer.byteLength(name, 'utf8');
  if (name.length > 255 && [...name].length > 255) throw new EtfError('unencodable', `atom longer than 255 characters`);
  if (n < 256) {
    w.ensure(2 + n);
    w.buf[w.pos++] = TAG.SMALL_ATOM_UTF8;
    w.buf[w.pos++] = n;
  } else {
    w.ensure(3 + n);
    w.buf[w.pos++] = TAG.ATOM_UTF8;
    w.buf.writeUInt16BE(n, w.pos);
    w.pos += 2;
  }
  w.pos += w.buf.write(name, w.pos, 'utf8');
}

function encodeInteger(w: Writer, n: number): void {
  if (n >= 0 && n <= 255) {
    w.ensure(2);
    w.buf[w.pos++] = TAG.SMALL_INTEGER;
    w.buf[w.pos++] = n;
  } else if (n >= -2147483648 && n <= 2147483647) {
    w.ensure(5);
    w.buf[w.pos++] = TAG.INTEGER;
    w.buf.writeInt32BE(n, w.pos);
    w.pos += 4;
  } else if (Number.isSafeInteger(n)) {
    // Up to 7 bytes: write the magnitude little-endian without going through BigInt.
    let mag = Math.abs(n);
    const bytes: number[] = [];
    while (mag > 0) {
      bytes.push(mag % 256);
      mag = Math.floor(mag / 256);
    }
    w.ensure(3 + bytes.length);
    w.buf[w.pos++] = TAG.SMALL_BIG;
    w.buf[w.pos++] = bytes.length;
    w.buf[w.pos++] = n < 0 ? 1 : 0;
    for (const b of bytes) w.buf[w.pos++] = b;
  } else {
    throw new EtfError('unencodable', `integer ${n} is beyond 2^53: pass a bigint`);
  }
}

function encodeBigInt(w: Writer, v: bigint): void {
  if (v >= -2147483648n && v <= 2147483647n) return encodeInteger(w, Number(v));
  let mag = v < 0n ? -v : v;
  const bytes: number[] = [];
  while (mag > 0n) {
    bytes.push(Number(mag & 0xffn));
    mag >>= 8n;
  }
  if (bytes.length < 256) {
    w.u8(TAG.SMALL_BIG);
    w.u8(bytes.length);
  } else {
    w.u8(TAG.LARGE_BIG);
    w.u32(bytes.length);
  }
  w.u8(v < 0n ? 1 : 0);
  w.bytes(Uint8Array.from(bytes));
}

function encodeFloat(w: Writer, v: number): void {
  if (!Number.isFinite(v)) throw new EtfError('unencodable', `non-finite float ${v}`);
  w.ensure(9);
  w.buf[w.pos++] = TAG.NEW_FLOAT;
  w.buf.writeDoubleBE(v, w.pos);
  w.pos += 8;
}

function encodeList(w: Writer, items: Term[], depth: number, maxDepth: number): void {
  const n = items.length;
  if (n === 0) return w.u8(TAG.NIL);
  if (n < 65536 && items.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= 0 && x <= 255)) {
    // What term_to_binary does for a list of bytes: STRING_EXT.
    w.ensure(3 + n);
    w.buf[w.pos++] = TAG.STRING;
    w.buf.writeUInt16BE(n, w.pos);
    w.pos += 2;
    for (const x of items) w.buf[w.pos++] = x as number;
    return;
  }
  w.u8(TAG.LIST);
  w.u32(n);
  for (const it of items) encodeTerm(w, it, depth + 1, maxDepth);
  w.u8(TAG.NIL);
}

function encodeObject(w: Writer, obj: TermObject, depth: number, maxDepth: number): void {
  const atoms = atomKeysOf(obj);
  const keys = Object.keys(obj).filter((k) => obj[k] !== undefined);
  // term order, as term_to_binary writes a flatmap: atoms before binaries; each by its bytes.
  const atomK: string[] = [];
  const binK: string[] = [];
  for (const k of keys) (atoms?.has(k) ? atomK : binK).push(k);
  atomK.sort(compareUtf8);
  binK.sort(compareUtf8);
  w.u8(TAG.MAP);
  w.u32(keys.length);
  for (const k of atomK) {
    encodeAtom(w, k);
    encodeTerm(w, obj[k]!, depth + 1, maxDepth);
  }
  for (const k of binK) {
    encodeString(w, k);
    encodeTerm(w, obj[k]!, depth + 1, maxDepth);
  }
}

function encodeTermMap(w: Writer, m: TermMap, depth: number, maxDepth: number): void {
  const entries = [...m.entries].sort((a, b) => compareTerms(a[0], b[0]));
  w.u8(TAG.MAP);
  w.u32(entries.length);
  for (const [k, v] of entries) {
    encodeTerm(w, k, depth + 1, maxDepth);
    encodeTerm(w, v, depth + 1, maxDepth);
  }
}

const SURROGATE = /[\uD800-\uDFFF]/;

/** UTF-8 byte order. UTF-16 code-unit order is the same unless a string has astral characters. */
function compareUtf8(a: string, b: string): number {
  if (SURROGATE.test(a) || SURROGATE.test(b)) return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
  return a < b ? -1 : a > b ? 1 : 0;
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
