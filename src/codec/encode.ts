/**
 * ETF encoding (split from etf.ts, unchanged).
 */
import zlib from 'node:zlib';
import { Atom, BitBinary, ErlFloat, ImproperList, Opaque, TermMap, Tuple, atomKeysOf, isTermObject, type Term, type TermObject } from './terms.js';
import { DEFAULT_MAX_DEPTH, EtfError, TAG, VERSION } from './format.js';
import { compareTerms, compareUtf8 } from './order.js';

const SHORT = 64;

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

