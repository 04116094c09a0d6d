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
export { VERSION, EtfError, type EtfErrorCode } from './format.js';
export { decode, type DecodeOptions } from './decode.js';
export { encode, type EncodeOptions } from './encode.js';
export { compareTerms } from './order.js';
