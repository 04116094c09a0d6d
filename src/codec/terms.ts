/**
 * The TypeScript side of the Erlang term mapping (docs/protocol.md).
 *
 * Plain JS values carry the common cases (string = UTF-8 binary, number,
 * bigint, boolean, null = nil, array = proper list, null-prototype object =
 * map). The classes here carry what plain JS cannot say without losing
 * fidelity: atoms, tuples, explicit floats, improper lists, bit binaries,
 * maps with non-string keys, and opaque pids/ports/refs.
 *
 * Nothing here knows about ops or transports.
 */

/** An Erlang atom. Interned, so `Atom.of('ok') === Atom.of('ok')`. */
export class Atom {
  private static readonly table = new Map<string, Atom>();
  private constructor(readonly name: string) {}
  static of(name: string): Atom {
    let a = Atom.table.get(name);
    if (a === undefined) {
      a = new Atom(name);
      Atom.table.set(name, a);
    }
    return a;
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

/** A map with string keys: a null-prototype object. */
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
 * BEAM. Kept beside the object (a WeakMap), not on it: nothing to copy,
 * enumerate or serialise by mistake.
 */
const atomKeySets = new WeakMap<object, ReadonlySet<string>>();

/** Create a null-prototype map object. */
export function newMap(): TermObject {
  return Object.create(null) as TermObject;
}

/**
 * A contract record: a null-prototype copy of `fields` whose keys all
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
  atomKeySets.set(out, keys);
  return out;
}

/** Mark `keys` of `obj` as atom keys (in addition to any already marked). */
export function markAtomKeys(obj: TermObject, keys: Iterable<string>): TermObject {
  const next = new Set<string>(atomKeySets.get(obj) ?? []);
  for (const k of keys) next.add(k);
  atomKeySets.set(obj, next);
  return obj;
}

/** Record the atom keys of a decoded map (the set is taken as it is). */
export function setAtomKeys(obj: TermObject, keys: ReadonlySet<string>): void {
  atomKeySets.set(obj, keys);
}

export function atomKeysOf(obj: object): ReadonlySet<string> | undefined {
  return atomKeySets.get(obj);
}

export function isTermObject(v: unknown): v is TermObject {
  if (v === null || typeof v !== 'object') return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === null || proto === Object.prototype;
}

/** Convenience: `{:ok, value}` / `{:error, {reason, message}}`. */
export const ok = (v: Term): Tuple => tuple(atom('ok'), v);
export const errorTuple = (reason: string, message: string): Tuple =>
  tuple(atom('error'), tuple(atom(reason), message));
