/**
 * What the decoder, encoder and term order share: the version byte, the tag
 * numbers of the External Term Format (erts/emulator/beam/external.h), and
 * the typed error. Hand-written with the rest of the codec (see decode.ts).
 */
export const VERSION = 131;

export const TAG = {
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

/** Default nesting bound of both directions. */
export const DEFAULT_MAX_DEPTH = 512;
