/**
 * The decoder's map shapes: maps whose keys follow a chain seen before
 * (every record of one kind) are matched key by key against the cached wire
 * bytes of the shape's keys, four bytes at a time, and share the shape's
 * atom-key set instead of building one each. A shape that many maps end at
 * gets a builder: generated code (`builderSource`, snapshot-tested) with a
 * constructor that stores each key by name into a fixed layout, and a
 * reader for the whole map that compares each key's bytes with integer
 * literals and keeps the values in locals. decode.ts uses shapes unless
 * `configureDecoder({ shapes: false })` (or `codegen: false`, builders
 * only) turns them off; what they are worth is in BENCHMARKS.md (codec).
 *
 * Bounded whatever a peer sends: at most MAX_SHAPES shapes (then the tree
 * starts again empty) of at most MAX_SHAPE_KEYS keys of at most
 * MAX_SHAPE_KEY characters; a builder after BUILD_AFTER maps, at most
 * MAX_BUILDERS ever compiled. In generated code each key appears only as a
 * string literal made by JSON.stringify and its wire bytes only as integer
 * literals, so no key can be anything but a property name. Where code
 * generation is refused (`--disallow-code-generation-from-strings`), maps
 * are built key by key.
 */
import { MAP_PROTO, mapPrototypeWithAtomKeys, type Term, type TermObject } from './terms.js';

export class Shape {
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
export const MAX_SHAPE_KEYS = 32;
const MAX_SHAPE_KEY = 64;
const KIDS_SCANNED = 8;
let root = new Shape([], undefined, '', new Uint8Array(0));
let shapeCount = 0;
/**
 * By key count: the built shape the last map of that many keys ended at,
 * whose reader the decoder tries first (maps of one kind come in runs: a
 * list of records). A wrong guess costs one compare of the first key's bytes.
 */
const hotBySize: Array<Shape | undefined> = new Array<Shape | undefined>(MAX_SHAPE_KEYS + 1).fill(undefined);

/** The shape of a map before its first key. */
export function shapeRoot(): Shape {
  return root;
}

/** The built shape the last map of `n` keys ended at, if any. */
export function hotShape(n: number): Shape | undefined {
  return hotBySize[n];
}

export function setHotShape(n: number, shape: Shape): void {
  hotBySize[n] = shape;
}

/** Forget every shape and builder (the tree starts again; for a comparison that switches shapes on and off). */
export function resetShapes(): void {
  root = new Shape([], undefined, '', new Uint8Array(0));
  shapeCount = 0;
  hotBySize.fill(undefined);
}

/** Whether the bytes of `b` at `p` (`dv`: `b` as a DataView, `end`: its end) are the key that leads to `kid`. */
export function atKey(kid: Shape, b: Buffer, dv: DataView, p: number, end: number): boolean {
  const kb = kid.keyBytes;
  const k = kb.length;
  if (k > end - p) return false;
  const w = kid.keyWords;
  for (let j = 0; j < w.length; j++) if (dv.getInt32(p + 4 * j) !== w[j]) return false;
  if ((k & 3) === 0) return true;
  if (k >= 4) return dv.getInt32(p + k - 4) === kid.keyLastWord;
  for (let j = 0; j < k; j++) if (b[p + j] !== kb[j]) return false;
  return true;
}

/** The shape after `shape` when the next key is `name` (its wire bytes: `b` from `keyStart` to `keyEnd`); undefined if none may be made. */
export function extend(shape: Shape, name: string, isAtom: boolean, b: Buffer, keyStart: number, keyEnd: number): Shape | undefined {
  const known = (isAtom ? shape.moreAtoms : shape.moreBinaries)?.get(name);
  if (known !== undefined) return known;
  if (shape.keys.length >= MAX_SHAPE_KEYS || name.length > MAX_SHAPE_KEY || shape.keys.includes(name)) return undefined;
  if (shapeCount >= MAX_SHAPES) {
    resetShapes();
    return undefined;
  }
  shapeCount++;
  let atomKeys = shape.atomKeys;
  if (isAtom) {
    const s = new Set(atomKeys);
    s.add(name);
    atomKeys = s;
  }
  const next = new Shape([...shape.keys, name], atomKeys, name, Uint8Array.from(b.subarray(keyStart, keyEnd)));
  next.parent = shape;
  if (shape.kids.length < KIDS_SCANNED) shape.kids.push(next);
  if (isAtom) (shape.moreAtoms ??= new Map()).set(name, next);
  else (shape.moreBinaries ??= new Map()).set(name, next);
  return next;
}

// ---------------------------------------------------------------- builders

/**
 * A shape's builder: a constructor that makes the object with one store per
 * key written out by name, which V8 compiles to direct stores into a fixed
 * layout where `obj[name] = value` with a different name each time is a
 * lookup (the technique of msgpackr's record reader), and a reader for the
 * whole map.
 */
export interface Built {
  /** The map from the n values at values[at..]: the general path's end. */
  make(values: Term[], at: number): TermObject;
  /**
   * The whole map, its header read and the decoder at its first key: each
   * key's wire bytes compared in turn with the shape's, each value read
   * into a local, and the object made by one monomorphic `new`. On the
   * first key that differs it stores the values read so far at
   * values[at..] and returns how many keys matched (a number, never a map):
   * the decoder is then at that key and goes on from `path[i - 1]`.
   */
  read(d: number, at: number): TermObject | number;
  /** The shapes after each key, path[i] after key i (path[n - 1] is the shape itself). */
  path: Shape[];
}

/** What the generated code reaches the decoder's state through (small closures, which V8 inlines into each reader). */
export interface BuilderRuntime {
  value(d: number): Term;
  pos(): number;
  setPos(p: number): void;
  left(): number;
  view(): DataView;
  buf(): Buffer;
  readonly values: Term[];
}

export const BUILD_AFTER = 32;
const MAX_BUILDERS = 512;
let buildersMade = 0;
let codegenWorks = true;

/** The shapes from the root's first kid to `shape`: path[i] is the shape after key i. */
export function pathOf(shape: Shape): Shape[] {
  const n = shape.keys.length;
  const path: Shape[] = new Array<Shape>(n);
  for (let s: Shape | undefined = shape, i = n - 1; i >= 0 && s !== undefined; s = s.parent, i--) path[i] = s;
  return path;
}

/** The source of the builder of the shape at the end of `path` (a function of `rt` and `proto`). */
export function builderSource(path: readonly Shape[]): string {
  const keys = path.map((s) => s.keyName);
  const vars = keys.map((_, i) => `v${i}`);
  const stores = keys.map((k, i) => `this[${JSON.stringify(k)}] = v${i};`).join(' ');
  const reads = path.map((kid, i) => {
    const k = kid.keyBytes.length;
    const tests = [`left() < ${k}`];
    kid.keyWords.forEach((w, j) => tests.push(`dv.getInt32(p + ${4 * j}) !== ${w}`));
    if (k >= 4 && (k & 3) !== 0) tests.push(`dv.getInt32(p + ${k - 4}) !== ${kid.keyLastWord}`);
    if (k < 4) kid.keyBytes.forEach((c, j) => tests.push(`b[p + ${j}] !== ${c}`));
    const saved = vars.slice(0, i).map((v, j) => `vs[a + ${j}] = ${v};`).join(' ');
    return `p = getPos(); if (${tests.join(' || ')}) { ${saved} return ${i}; } setPos(p + ${k}); const v${i} = value(d);`;
  });
  return `'use strict';
const value = rt.value, getPos = rt.pos, setPos = rt.setPos, left = rt.left, getView = rt.view, getBuf = rt.buf, vs = rt.values;
function B(${vars.join(', ')}) { ${stores} }
B.prototype = proto;
return {
  make: function (v, a) { return new B(${vars.map((_, i) => `v[a + ${i}]`).join(', ')}); },
  read: function (d, a) { const dv = getView(); const b = getBuf(); let p = 0; ${reads.join(' ')} return new B(${vars.join(', ')}); },
};`;
}

/** Compile the builder of `shape`, or undefined (over MAX_BUILDERS, or code generation refused). */
export function compileBuilder(shape: Shape, rt: BuilderRuntime): Built | undefined {
  if (!codegenWorks || buildersMade >= MAX_BUILDERS) return undefined;
  buildersMade++;
  const path = pathOf(shape);
  try {
    // A constructor, not a function returning a literal: `new` of a function whose prototype is MAP_PROTO is what makes a map fast (see MAP_PROTO).
    // The shape's atom keys ride on the prototype: a built map needs no stamp of its own.
    const proto = shape.atomKeys !== undefined ? mapPrototypeWithAtomKeys(shape.atomKeys) : MAP_PROTO;
    const made = (new Function('rt', 'proto', builderSource(path)) as (rt: BuilderRuntime, proto: object) => Omit<Built, 'path'>)(rt, proto);
    return { make: made.make, read: made.read, path };
  } catch {
    codegenWorks = false;
    return undefined;
  }
}
