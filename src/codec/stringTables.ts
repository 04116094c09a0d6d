/**
 * The decoder's string tables: strings already made, found again by their
 * bytes, so the same few names and values that arrive in every frame cost
 * a hash instead of a new string (as V8's JSON.parse internalises short
 * values). Three fixed-size tables, a new entry replacing whatever shared
 * its slot, so each holds a bounded number of strings whatever a peer
 * sends: short ASCII binaries (≤ SHORT_STRING bytes, STRING_SLOTS slots),
 * medium ones (≤ MEDIUM_STRING bytes, MEDIUM_SLOTS slots) and ASCII atom
 * names (≤ MAX_CACHED_ATOM bytes, ATOM_SLOTS slots, with the term each
 * stands for). decode.ts uses them unless `configureDecoder({ stringTables:
 * false })` turns them off (bench/codec.ts compares); what they are worth
 * is measured in BENCHMARKS.md (codec section).
 */

/** Buffer's own native slicers (what `toString(enc, s, e)` calls after checking its arguments). */
interface Slicers {
  utf8Slice(start: number, end: number): string;
  latin1Slice(start: number, end: number): string;
}
const hasSlicers = typeof (Buffer.prototype as unknown as Partial<Slicers>).utf8Slice === 'function';

/** The UTF-8 decode of bytes s..e (invalid sequences become U+FFFD), by the native slicer. */
export function utf8Slice(b: Buffer, s: number, e: number): string {
  return hasSlicers ? (b as unknown as Slicers).utf8Slice(s, e) : b.toString('utf8', s, e);
}

/** The Latin-1 decode of bytes s..e (for ASCII bytes: the same string as UTF-8, by a plain copy). */
export function latin1Slice(b: Buffer, s: number, e: number): string {
  return hasSlicers ? (b as unknown as Slicers).latin1Slice(s, e) : b.toString('latin1', s, e);
}

const fromCharCode = String.fromCharCode;

/** The string of `n` ≤ 8 ASCII bytes at `p`, without a native call. */
export function shortAscii(b: Buffer, p: number, n: number): string {
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

// ---------------------------------------------------------------- short strings

/**
 * Short ASCII strings by their bytes: a fixed table indexed by a hash of
 * (up to) four 32-bit words covering the bytes.
 */
export const SHORT_STRING = 16;
const STRING_SLOTS = 4096;
const slotWords = new Int32Array(STRING_SLOTS * 4);
const slotLength = new Int8Array(STRING_SLOTS).fill(-1);
const slotString: string[] = new Array<string>(STRING_SLOTS).fill('');

/** The string of the `n` ≤ SHORT_STRING bytes of `b` at `s` if they are ASCII, else undefined (`dv`: `b` as a DataView). */
export function shortString(b: Buffer, dv: DataView, s: number, n: number): string | undefined {
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

// ---------------------------------------------------------------- medium strings

/**
 * ASCII strings of SHORT_STRING+1 to MEDIUM_STRING bytes (statuses, names,
 * timestamps, short sentences), as shortString does for shorter ones. The
 * bytes are read as eight 32-bit words: the first four, then four more
 * ending at the last byte (overlapping when n < 32), which together cover
 * every byte, so equal words and length mean equal bytes, and the ASCII
 * test sees every byte. A miss costs the hash on top of the one native
 * Latin-1 copy (equal to the UTF-8 decode for ASCII bytes).
 */
export const MEDIUM_STRING = 32;
const MEDIUM_SLOTS = 2048;
const mediumWords = new Int32Array(MEDIUM_SLOTS * 8);
const mediumLength = new Int8Array(MEDIUM_SLOTS).fill(-1);
const mediumText: string[] = new Array<string>(MEDIUM_SLOTS).fill('');

/** The string of the SHORT_STRING < `n` ≤ MEDIUM_STRING bytes at `s` if they are ASCII, else undefined. */
export function mediumString(b: Buffer, dv: DataView, s: number, n: number): string | undefined {
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
  const str = latin1Slice(b, s, s + n);
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

// ---------------------------------------------------------------- atom names

/**
 * Atom names, and the term each stands for (an Atom, true, false or null),
 * by their bytes: record field names and tags arrive in every frame. Only
 * ASCII names are kept (then Latin-1 and UTF-8 agree, so one entry serves
 * all four atom tags).
 */
const ATOM_SLOTS = 4096;
const MAX_CACHED_ATOM = 64;
/** The name in each slot (undefined: empty). */
export const atomNames: Array<string | undefined> = new Array<string | undefined>(ATOM_SLOTS).fill(undefined);
/** The term of each slot's name, made when first needed (undefined until then): a name seen only as a map key never becomes an Atom. */
export const atomTerms: Array<unknown> = new Array<unknown>(ATOM_SLOTS).fill(undefined);

/**
 * The slot holding the name of the `n` bytes at `p` (put there now if it
 * was not), or -1 when the name is not cached (over MAX_CACHED_ATOM bytes,
 * or not ASCII): the caller reads it from `atomNames[slot]`.
 */
export function atomSlot(b: Buffer, p: number, n: number): number {
  if (n > MAX_CACHED_ATOM) return -1;
  let h = n;
  let or = 0;
  for (let i = p; i < p + n; i++) {
    const c = b[i]!;
    or |= c;
    h = (Math.imul(h, 31) + c) | 0;
  }
  if (or >= 0x80) return -1;
  const slot = (h ^ (h >>> 12)) & (ATOM_SLOTS - 1);
  const cached = atomNames[slot];
  if (cached !== undefined && cached.length === n) {
    let i = 0;
    while (i < n && cached.charCodeAt(i) === b[p + i]) i++;
    if (i === n) return slot;
  }
  atomNames[slot] = n <= 8 ? shortAscii(b, p, n) : latin1Slice(b, p, p + n);
  atomTerms[slot] = undefined;
  return slot;
}
