/**
 * The TypeScript side of the Erlang term mapping (docs/protocol.md).
 *
 * Plain JS values carry the common cases (string = UTF-8 binary, number,
 * bigint, boolean, null = nil, array = proper list, map object (inherits nothing) =
 * map). The classes here carry what plain JS cannot say without losing
 * fidelity: atoms, tuples, explicit floats, improper lists, bit binaries,
 * maps with non-string keys, and opaque pids/ports/refs.
 *
 * Nothing here knows about ops or transports.
 */

/**
 * An Erlang atom. Interned, so `Atom.of('ok') === Atom.of('ok')`: names our
 * code uses are always interned. Atoms that arrive from a peer go through
 * `fromWire`, which interns only the first `MAX_WIRE_ATOMS` names it has not
 * seen (the BEAM's own atom table is finite, but a hostile peer may send
 * any number of distinct names, and memory must stay bounded); past that,
 * a new name gets a fresh, uninterned instance. Compare atoms by `.name`
 * when they may come from outside.
 */
export class Atom {
  private static readonly table = new Map<string, Atom>();
  private static wireInterned = 0;
  static readonly MAX_WIRE_ATOMS = 10_000;
  private constructor(readonly name: string) {}
  static of(name: string): Atom {
    let a = Atom.table.get(name);
    if (a === undefined) {
      a = new Atom(name);
      Atom.table.set(name, a);
    }
    return a;
  }
  /** The atom for a name decoded from a peer: interned up to a bound (see the class comment). */
  static fromWire(name: string): Atom {
    const a = Atom.table.get(name);
    if (a !== undefined) return a;
    if (Atom.wireInterned >= Atom.MAX_WIRE_ATOMS) return new Atom(name);
    Atom.wireInterned++;
    const b = new Atom(name);
    Atom.table.set(name, b);
    return b;
  }
  toString(): string {
    return this.name;
  }
  toJSON(): string {
    return this.name;
  }
}
export const atom = (n: string): Atom => Atom.of(n);

/** An Erlang tuple. */
export class Tuple {
  readonly items: Term[];
  constructor(items: Term[]) {
    this.items = items;
  }
  get length(): number {
    return this.items.length;
  }
  at(i: number): Term | undefined {
    return this.items[i];
  }
}
export const tuple = (...items: Term[]): Tuple => new Tuple(items);

/**
 * An explicit float. Decoded floats come back as this class so that 1.0
 * re-encodes as a float, not the integer 1. Encode `new ErlFloat(0)` (or
 * `float(x)`) where the contract says "float" (scores, rates, confidences).
 */
export class ErlFloat {
  constructor(readonly value: number) {}
  valueOf(): number {
    return this.value;
  }
  toJSON(): number {
    return this.value;
  }
}
export const float = (v: number): ErlFloat => new ErlFloat(v);

/** A list whose tail is not `[]`: `[a, b | tail]`. */
export class ImproperList {
  constructor(
    readonly items: Term[],
    readonly tail: Term,
  ) {}
}

/** A binary whose length in bits is not a multiple of 8 (BIT_BINARY_EXT). */
export class BitBinary {
  /** `bits` is the number of used bits in the last byte (1..8). */
  constructor(
    readonly bytes: Buffer,
    readonly bits: number,
  ) {}
}

/**
 * A pid, port or reference: kept as the exact bytes of the term (tag
 * included) so that it re-encodes to the same bytes.
 */
export class Opaque {
  constructor(
    readonly kind: 'pid' | 'port' | 'reference',
    readonly bytes: Buffer,
  ) {}
}

/** A map whose keys are not all atoms or binaries (or mix an atom and a binary of the same text). */
export class TermMap {
  constructor(readonly entries: Array<[Term, Term]>) {}
}

/** A map with string keys: an object that inherits nothing (see MAP_PROTO). */
export interface TermObject {
  [key: string]: Term;
}

export type Term =
  | null
  | boolean
  | number
  | bigint
  | string
  | Buffer
  | Atom
  | Tuple
  | ErlFloat
  | ImproperList
  | BitBinary
  | Opaque
  | TermMap
  | Term[]
  | TermObject;

/**
 * Which keys of a map object are atoms. The decoder records it for every
 * map it decodes (so atom keys stay atoms on re-encode); `record()` records
 * it for maps we build whose keys are contract field names. Keys not
 * recorded are encoded as binaries, so user data never mints atoms on the
 * BEAM. Kept in a private class field stamped onto the object, not in a
 * property: nothing to copy, enumerate or serialise by mistake (invisible to
 * Object.keys, Reflect.ownKeys, JSON, spread and structuredClone).
 *
 * A private field rather than a WeakMap beside the object: a WeakMap insert
 * per decoded map (ephemeron table, GC) costs many times a field store (a
 * hidden-class transition that V8 caches per object shape; figures in
 * BENCHMARKS.md, codec section). The WeakMap stays as a fallback should an engine refuse the field (for
 * example on a non-extensible object).
 */
class Receiver {
  constructor(o: object) {
    // "return override": `super(o)` in a subclass makes `this` the given object.
    return o;
  }
}
class AtomKeyField extends Receiver {
  #keys: ReadonlySet<string>;
  private constructor(o: object, keys: ReadonlySet<string>) {
    super(o);
    this.#keys = keys;
  }
  static set(o: object, keys: ReadonlySet<string>): void {
    if (#keys in o) (o as AtomKeyField).#keys = keys;
    else {
      try {
        new AtomKeyField(o, keys);
      } catch {
        fallbackAtomKeys.set(o, keys);
      }
    }
  }
  /** For an object that has no atom-key set yet. */
  static init(o: object, keys: ReadonlySet<string>): void {
    try {
      new AtomKeyField(o, keys);
    } catch {
      fallbackAtomKeys.set(o, keys);
    }
  }
  /** `proto`: the object's prototype when the caller has it already (the encoder does). */
  static get(o: object, proto: unknown = Object.getPrototypeOf(o)): ReadonlySet<string> | undefined {
    if (#keys in o) return (o as AtomKeyField).#keys;
    // A decoded map of a known shape carries its shape's set on its prototype (mapPrototypeWithAtomKeys).
    if (proto !== MAP_PROTO && proto !== Object.prototype && typeof proto === 'object' && proto !== null && #keys in proto) return (proto as AtomKeyField).#keys;
    return fallbackAtomKeys.get(o);
  }
}
const fallbackAtomKeys = new WeakMap<object, ReadonlySet<string>>();

/**
 * The prototype of every map object the codec makes: empty, frozen, and
 * itself without a prototype, so a map inherits nothing — no
 * `constructor`, no `toString`, no `__proto__` setter (a `__proto__` key
 * lands as an own property). Not a null prototype on the map itself
 * because V8 makes that slowly: `{}` then `Object.setPrototypeOf(m, null)`
 * (or `Object.create(null)`, which starts in dictionary mode) costs several
 * times `new` of a constructor whose prototype this is, which also keeps the
 * fast in-object layout (figures in BENCHMARKS.md, Hot-path goals). Maps are told from other
 * objects by `isMapPrototype`.
 */
export const MAP_PROTO: object = Object.freeze(Object.create(null) as object);

/** The constructor behind newMap (and behind the decoder's per-shape builders, which share its prototype). */
const EmptyMap = function EmptyMap(this: object) {} as unknown as new () => TermObject;
(EmptyMap as unknown as { prototype: object }).prototype = MAP_PROTO;

/** An empty map object: inherits nothing (see MAP_PROTO). */
export function newMap(): TermObject {
  return new EmptyMap();
}

/**
 * A prototype for the maps of one shape whose atom keys are `keys`: like
 * MAP_PROTO (empty, frozen, inherits nothing) and carrying the set, so
 * the decoder's maps of a known shape need no stamp each (a stamp is a
 * hidden-class transition per map; BENCHMARKS.md, Hot-path goals). A set
 * stamped on the map itself (markAtomKeys) takes precedence.
 */
export function mapPrototypeWithAtomKeys(keys: ReadonlySet<string>): object {
  const proto = Object.create(MAP_PROTO) as object;
  AtomKeyField.init(proto, keys);
  return Object.freeze(proto);
}

/** Whether an object with this prototype is a map of the term mapping: MAP_PROTO (or one of a shape's), null or a plain object's. */
export function isMapPrototype(proto: unknown): boolean {
  if (proto === MAP_PROTO || proto === null || proto === Object.prototype) return true;
  return typeof proto === 'object' && Object.getPrototypeOf(proto) === MAP_PROTO;
}

/**
 * A contract record: a map (newMap) copying `fields` whose keys all
 * encode as atoms. Values are copied as they are (mark nested records
 * yourself). `undefined` values are dropped.
 */
export function record(fields: Record<string, Term | undefined>): TermObject {
  const out = newMap();
  const keys = new Set<string>();
  for (const k of Object.keys(fields)) {
    const v = fields[k];
    if (v === undefined) continue;
    out[k] = v;
    keys.add(k);
  }
  AtomKeyField.set(out, keys);
  return out;
}

/** Mark `keys` of `obj` as atom keys (in addition to any already marked). */
export function markAtomKeys(obj: TermObject, keys: Iterable<string>): TermObject {
  const next = new Set<string>(AtomKeyField.get(obj) ?? []);
  for (const k of keys) next.add(k);
  AtomKeyField.set(obj, next);
  return obj;
}

/** Record the atom keys of a decoded map (the set is taken as it is). */
export function setAtomKeys(obj: TermObject, keys: ReadonlySet<string>): void {
  AtomKeyField.set(obj, keys);
}

/** Record the atom keys of a map object just made, that has none recorded yet (the decoder's). */
export function initAtomKeys(obj: TermObject, keys: ReadonlySet<string>): void {
  AtomKeyField.init(obj, keys);
}

/** Which keys of a map are atoms; `proto`: its prototype, when the caller has read it already. */
export function atomKeysOf(obj: object, proto?: unknown): ReadonlySet<string> | undefined {
  return proto === undefined ? AtomKeyField.get(obj) : AtomKeyField.get(obj, proto);
}

export function isTermObject(v: unknown): v is TermObject {
  if (v === null || typeof v !== 'object') return false;
  return isMapPrototype(Object.getPrototypeOf(v));
}

/** Convenience: `{:ok, value}` / `{:error, {reason, message}}`. */
export const ok = (v: Term): Tuple => tuple(atom('ok'), v);
export const errorTuple = (reason: string, message: string): Tuple =>
  tuple(atom('error'), tuple(atom(reason), message));
