/**
 * ETF decoding: the bytes of one term (version 131) → the term mapping of
 * terms.ts, in one pass with the read position in module state (decode is
 * synchronous and never re-entered). Safe on hostile input: every declared
 * length is checked before anything is allocated, nesting depth and
 * decompressed size are bounded, trailing bytes are an error, map keys land
 * on objects that inherit nothing (MAP_PROTO), and each failure is an
 * `EtfError` with its code, message and offset. Its fast paths live beside
 * it — string tables (stringTables.ts) and map shapes with generated
 * builders (shapes.ts) — and each can be switched off (`configureDecoder`)
 * for a comparison (bench/codec.ts; figures in BENCHMARKS.md).
 */
import { isUtf8 } from 'node:buffer';
import zlib from 'node:zlib';
import { Atom, BitBinary, ErlFloat, ImproperList, Opaque, TermMap, Tuple, initAtomKeys, newMap, type Term, type TermObject } from './terms.js';
import { DEFAULT_MAX_DEPTH, EtfError, TAG, VERSION } from './format.js';
import { atKey, BUILD_AFTER, compileBuilder, extend, hotShape, MAX_SHAPE_KEYS, resetShapes, setHotShape, shapeRoot, type BuilderRuntime, type Shape } from './shapes.js';
import { atomNames, atomSlot, atomTerms, MEDIUM_STRING, mediumString, SHORT_STRING, shortString, utf8Slice } from './stringTables.js';

// Local names for what the hot paths read from the other files: constants and tables of this module,
// which V8 folds or loads directly (an imported binding is a load through the module's cells).
const SHORT = SHORT_STRING;
const MEDIUM = MEDIUM_STRING;
const MAX_KEYS = MAX_SHAPE_KEYS;
const names = atomNames;
const terms = atomTerms;

export interface DecodeOptions {
  /** Deepest nesting of lists/tuples/maps accepted. Default 512, at most 2048. */
  maxDepth?: number;
  /** Largest accepted uncompressed size of a compressed term. Default 64 MiB. */
  maxDecompressedBytes?: number;
  /** Largest accepted bignum, in bytes. Default 8192 (a 65,536-bit integer). */
  maxBigBytes?: number;
}

/** The decoder's fast paths, each on by default; the terms decoded are the same either way. */
export interface DecoderFastPaths {
  /** Short, medium and atom-name string tables (stringTables.ts). */
  stringTables: boolean;
  /** Map shapes: key bytes compared with known shapes, shared atom-key sets (shapes.ts). */
  shapes: boolean;
  /** With shapes: generated builders and readers for hot shapes (shapes.ts). */
  codegen: boolean;
}

let fast: DecoderFastPaths = { stringTables: true, shapes: true, codegen: true };

/** Switch fast paths on or off (for a comparison); returns the settings before. Shapes made before are forgotten. */
export function configureDecoder(paths: Partial<DecoderFastPaths>): DecoderFastPaths {
  const before = fast;
  fast = { ...fast, ...paths };
  resetShapes();
  return before;
}

const HARD_MAX_DEPTH = 2048;
const DEFAULT_MAX_DECOMPRESSED = 64 * 1024 * 1024;
const DEFAULT_MAX_BIG = 8192;

// The state of the one decode in progress.
let buf: Buffer = Buffer.alloc(0);
/** `buf` read four bytes at a time (to compare map keys with those of a known shape). */
let view: DataView<ArrayBufferLike> = new DataView(new ArrayBuffer(0));
let pos = 0;
let end = 0;
let maxDepth = DEFAULT_MAX_DEPTH;
let maxBig = DEFAULT_MAX_BIG;
/** Read once per decode from `fast`: module variables, cheaper to test on the hot path than a property. */
let useTables = true;
let useShapes = true;
let useCodegen = true;

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
  useTables = fast.stringTables;
  useShapes = fast.shapes;
  useCodegen = fast.codegen;
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

/**
 * A BINARY_EXT body: a string when it is valid UTF-8, else a copy of the
 * bytes. Short and medium ASCII binaries come from the string tables; the
 * rest is one native UTF-8 decode.
 */
function binary(s: number, n: number): string | Buffer {
  if (useTables) {
    if (n <= SHORT) {
      const str = shortString(buf, view, s, n);
      if (str !== undefined) return str;
    } else if (n <= MEDIUM) {
      const str = mediumString(buf, view, s, n);
      if (str !== undefined) return str;
    }
  }
  return utf8(s, n);
}

/**
 * One native UTF-8 decode, kept small so that V8 inlines it where binaries
 * are read. It replaces each invalid sequence with U+FFFD, so a result
 * without U+FFFD proves the bytes valid; only one holding it is checked again.
 */
function utf8(s: number, n: number): string | Buffer {
  const b = buf;
  const str = utf8Slice(b, s, s + n);
  if (str.indexOf('\uFFFD') === -1) return str;
  const bytes = b.subarray(s, s + n);
  return isUtf8(bytes) ? str : Buffer.from(bytes);
}

// ---------------------------------------------------------------- atoms

/** The name of an atom whose `n` bytes start at `pos`; advances past them. */
function atomName(tag: number, n: number, start: number): string {
  if (n > end - pos) throw truncated(n);
  const p = pos;
  if (useTables) {
    const slot = atomSlot(buf, p, n);
    if (slot >= 0) {
      pos = p + n;
      return names[slot]!;
    }
  }
  pos = p + n;
  const bytes = buf.subarray(p, p + n);
  if (tag === TAG.ATOM || tag === TAG.SMALL_ATOM) return bytes.toString('latin1');
  if (!isUtf8(bytes)) throw new EtfError('bad_atom', 'atom is not valid UTF-8', start);
  const name = bytes.toString('utf8');
  if (n > 255 && [...name].length > 255) throw new EtfError('bad_atom', 'atom longer than 255 characters', start);
  return name;
}

/** The term of an atom whose `n` bytes start at `pos` (an Atom, true, false or nil): from the table when its name is there. */
function atomTerm(tag: number, n: number, start: number): Atom | boolean | null {
  if (useTables && n <= end - pos) {
    const slot = atomSlot(buf, pos, n);
    if (slot >= 0) {
      pos += n;
      const cached = terms[slot] as Atom | boolean | null | undefined;
      return cached !== undefined ? cached : ((terms[slot] = atomValue(names[slot]!)) as Atom | boolean | null);
    }
  }
  return atomValue(atomName(tag, n, start));
}

function atomValue(name: string): Atom | boolean | null {
  if (name === 'true') return true;
  if (name === 'false') return false;
  if (name === 'nil') return null;
  return Atom.fromWire(name);
}

// ---------------------------------------------------------------- maps

/** Whether the tag byte at `pos` is an atom's (a map key read by name). */
function atomTagAt(): boolean {
  const kt = pos < end ? buf[pos]! : -1;
  return kt === 119 || kt === 115 || kt === 118 || kt === 100;
}

/** An atom key's name (the caller saw an atom tag at `pos`). */
function atomKey(): string {
  const start = pos;
  const kt = buf[pos++]!;
  return atomName(kt, kt === 119 || kt === 115 ? u8() : u16(), start);
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
        return n > MEDIUM ? utf8(s, n) : binary(s, n);
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

/** The values of the maps being decoded, until their objects are made (a stack: a nested map takes the slots after its parent's). */
const values: Term[] = [];
let valueTop = 0;
/** What generated builders reach the decoder's state through. */
const runtime: BuilderRuntime = {
  value: (d: number): Term => value(d),
  pos: (): number => pos,
  setPos: (p: number): void => {
    pos = p;
  },
  left: (): number => end - pos,
  view: (): DataView => view,
  buf: (): Buffer => buf,
  values,
};

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
  if (n > MAX_KEYS || !useShapes) {
    if (n === 0) return newMap();
    const isAtom = atomTagAt();
    return mapRest(newMap(), undefined, 0, n, d, isAtom ? atomKey() : term(d), isAtom);
  }
  const at = valueTop;
  valueTop = at + n;
  let shape = shapeRoot();
  let i = 0;
  const hot = useCodegen ? hotShape(n) : undefined;
  if (hot !== undefined) {
    const built = hot.build!;
    const made = built.read(d, at);
    if (typeof made !== 'number') {
      valueTop = at;
      return made;
    }
    i = made;
    if (i > 0) shape = built.path[i - 1]!;
  }
  for (; i < n; i++) {
    // A key seen after this shape before? Compare bytes.
    let kid = shape.last;
    if (kid === undefined || !atKey(kid, buf, view, pos, end)) {
      kid = undefined;
      const kids = shape.kids;
      for (let c = 0; c < kids.length; c++)
        if (atKey(kids[c]!, buf, view, pos, end)) {
          kid = shape.last = kids[c]!;
          break;
        }
    }
    if (kid !== undefined) pos += kid.keyBytes.length;
    else {
      const keyStart = pos;
      const isAtom = atomTagAt();
      const key = isAtom ? atomKey() : term(d);
      kid = typeof key === 'string' ? extend(shape, key, isAtom, buf, keyStart, pos) : undefined;
      if (kid === undefined) {
        const obj = newObject(shape.keys, i, at);
        release(at, i);
        return mapRest(obj, shape.atomKeys, i, n, d, key, isAtom);
      }
    }
    values[at + i] = value(d);
    shape = kid;
  }
  return finish(shape, n, at);
}

/** The object of a map that went along the shape tree to `shape`: by its builder once it has one (made after BUILD_AFTER maps). */
function finish(shape: Shape, n: number, at: number): TermObject {
  let build = shape.build;
  if (build === undefined && useCodegen && ++shape.uses >= BUILD_AFTER) build = shape.build = compileBuilder(shape, runtime);
  if (build !== undefined) {
    const built = build.make(values, at);
    release(at, n);
    setHotShape(n, shape);
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
      isAtom = atomTagAt();
      key = isAtom ? atomKey() : term(d);
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
