/**
 * The request id of a frame that cannot be decoded as a whole (a fun, too
 * deep, over the frame limit, a bad atom in its args): read just the head
 * of `{:req, id, ...}` — version byte, tuple header, the atom `req`, a
 * non-negative integer — so the caller gets `{:reply, id, {:error, ...}}`
 * instead of waiting for its timeout. Hand-written: it must work on frames
 * the full decoder refuses, and on the first bytes of an oversized one. A
 * compressed frame (`term_to_binary(t, [:compressed])`, a zip bomb among
 * them) has its id inside the zlib stream: only the stream's first bytes are
 * inflated, into a bounded buffer, to read it.
 */
import zlib from 'node:zlib';

const VERSION = 131;
const COMPRESSED = 80;
/** Compressed bytes inflated to find the id (the head of `{:req, id, ...}` is a few dozen bytes once inflated). */
const COMPRESSED_PEEK = 512;
const SMALL_TUPLE = 104;
const LARGE_TUPLE = 105;
const ATOM = 100;
const SMALL_ATOM = 115;
const ATOM_UTF8 = 118;
const SMALL_ATOM_UTF8 = 119;
const SMALL_INTEGER = 97;
const INTEGER = 98;
const SMALL_BIG = 110;

/** The id of a `{:req, id, op, args}` frame, or undefined when its head does not say. */
export function peekRequestId(buf: Buffer): number | bigint | undefined {
  if (buf.length >= 6 && buf[0] === VERSION && buf[1] === COMPRESSED) return peekCompressed(buf.subarray(6, 6 + COMPRESSED_PEEK));
  let i = 0;
  const need = (n: number): boolean => i + n <= buf.length;
  if (!need(1) || buf[i++] !== VERSION) return undefined;
  if (!need(1)) return undefined;
  const tupleTag = buf[i++];
  let arity: number;
  if (tupleTag === SMALL_TUPLE && need(1)) arity = buf[i++]!;
  else if (tupleTag === LARGE_TUPLE && need(4)) {
    arity = buf.readUInt32BE(i);
    i += 4;
  } else return undefined;
  if (arity !== 4) return undefined;
  if (!need(1)) return undefined;
  const atomTag = buf[i++];
  let len: number;
  if ((atomTag === SMALL_ATOM || atomTag === SMALL_ATOM_UTF8) && need(1)) len = buf[i++]!;
  else if ((atomTag === ATOM || atomTag === ATOM_UTF8) && need(2)) {
    len = buf.readUInt16BE(i);
    i += 2;
  } else return undefined;
  if (len !== 3 || !need(3) || buf.toString('latin1', i, i + 3) !== 'req') return undefined;
  i += 3;
  if (!need(1)) return undefined;
  const intTag = buf[i++];
  if (intTag === SMALL_INTEGER && need(1)) return buf[i]!;
  if (intTag === INTEGER && need(4)) {
    const v = buf.readInt32BE(i);
    return v >= 0 ? v : undefined;
  }
  if (intTag === SMALL_BIG && need(2)) {
    const n = buf[i]!;
    const sign = buf[i + 1]!;
    if (sign !== 0 || n > 16 || !need(2 + n)) return undefined;
    let v = 0n;
    for (let k = n - 1; k >= 0; k--) v = (v << 8n) | BigInt(buf[i + 2 + k]!);
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }
  return undefined;
}

/** The id in the first bytes of a compressed frame's zlib stream (a truncated stream is fine: sync flush). */
function peekCompressed(zhead: Buffer): number | bigint | undefined {
  let inflated: Buffer;
  try {
    // At most ~1032 bytes out per byte in: COMPRESSED_PEEK bytes inflate to well under the cap.
    inflated = zlib.inflateSync(zhead, { finishFlush: zlib.constants.Z_SYNC_FLUSH, maxOutputLength: 1 << 20 });
  } catch {
    return undefined;
  }
  const plain = Buffer.allocUnsafe(1 + Math.min(inflated.length, 64));
  plain[0] = VERSION;
  inflated.copy(plain, 1, 0, plain.length - 1);
  return peekRequestId(plain);
}
