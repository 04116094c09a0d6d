/**
 * ETF decoding (split from etf.ts, unchanged).
 */
import { isUtf8 } from 'node:buffer';
import zlib from 'node:zlib';
import { Atom, BitBinary, ErlFloat, ImproperList, Opaque, TermMap, Tuple, setAtomKeys, type Term, type TermObject } from './terms.js';
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
export const SHORT = 64;

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

