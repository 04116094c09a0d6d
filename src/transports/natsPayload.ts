/**
 * NATS request and reply bodies: JSON by default (Gnat + Jason), ETF when
 * the request carries `content-type: application/x-erlang-binary`. The
 * reply uses the request's encoding.
 *
 *   JSON  success  {"ok": <result>}           error  {"error": {"reason": "...", "message": "..."}}
 *   ETF   success  {:ok, result}              error  {:error, {reason_atom, message_binary}}
 *
 * Success is wrapped (not bare) so a body can be told apart from an error
 * without reading headers, and so it reads like the Port's `{:ok, result}`.
 */
import { headers as natsHeaders, Match, type MsgHdrs } from 'nats';
import { decode, EtfError, encode } from '../codec/etf.js';
import { parseJsonTerm, termToJson } from '../codec/json.js';
import { atom, isTermObject, newMap, tuple, type Term } from '../codec/terms.js';
import type { OpResult } from '../ops/index.js';
import type { ErrorReason } from '../contract/errors.js';

export const ETF_CONTENT_TYPE = 'application/x-erlang-binary';
export const JSON_CONTENT_TYPE = 'application/json';
export type Encoding = 'json' | 'etf';

export function encodingOf(h: MsgHdrs | undefined): Encoding {
  const ct = h?.get('content-type', Match.IgnoreCase) ?? '';
  return ct.trim().toLowerCase().startsWith(ETF_CONTENT_TYPE) ? 'etf' : 'json';
}

export type Parsed = { ok: true; args: Term } | { ok: false; reason: ErrorReason; message: string };

/** The args of a request: a map; an empty body is the empty map. */
export function parseArgs(data: Uint8Array, enc: Encoding): Parsed {
  if (data.length === 0) return { ok: true, args: newMap() };
  let t: Term;
  try {
    const bytes = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    t = enc === 'etf' ? decode(bytes) : parseJsonTerm(bytes.toString('utf8'));
  } catch (err) {
    const what = err instanceof EtfError ? `${err.code}: ${err.message}` : err instanceof Error ? err.message : String(err);
    return { ok: false, reason: 'bad_request', message: `body: expected ${enc === 'etf' ? 'an ETF term' : 'JSON'} (${what})` };
  }
  if (!isTermObject(t)) return { ok: false, reason: 'bad_request', message: 'args: expected a map' };
  return { ok: true, args: t };
}

/** Service-error code for each reason (HTTP-like, as `nats micro` tooling expects). */
export const ERROR_CODES: Record<ErrorReason, number> = {
  bad_request: 400,
  not_found: 404,
  unknown_op: 404,
  conflict: 409,
  insufficient_data: 422,
  overloaded: 429,
  cancelled: 499,
  internal: 500,
  llm_error: 502,
  unavailable: 503,
  shutting_down: 503,
  timeout: 504,
};

export interface EncodedReply {
  body: Uint8Array;
  headers: MsgHdrs;
  error?: { code: number; reason: ErrorReason; message: string };
}

/**
 * The headers of every success reply in one encoding, made and encoded
 * once: nats.js encodes a headers object on every publish (a string build
 * and a TextEncoder call; BENCHMARKS.md, Hot-path goals). Never changed
 * after this, so sharing one object between replies is safe.
 */
function constantHeaders(contentType: string): MsgHdrs {
  const h = natsHeaders();
  h.set('Content-Type', contentType);
  const encoded = (h as MsgHdrs & { encode(): Uint8Array }).encode();
  (h as MsgHdrs & { encode(): Uint8Array }).encode = () => encoded;
  return h;
}
const SUCCESS_HEADERS: Record<Encoding, MsgHdrs> = { json: constantHeaders(JSON_CONTENT_TYPE), etf: constantHeaders(ETF_CONTENT_TYPE) };

/** Encode an op result in the request's encoding; an unencodable result becomes an `internal` error. */
export function encodeReply(r: OpResult, enc: Encoding): EncodedReply {
  if (r.ok) {
    try {
      const body = enc === 'etf' ? encode(tuple(atom('ok'), r.value)) : Buffer.from(JSON.stringify({ ok: termToJson(r.value) }));
      return { body, headers: SUCCESS_HEADERS[enc] };
    } catch (err) {
      return encodeReply({ ok: false, reason: 'internal', message: `reply could not be encoded: ${err instanceof Error ? err.message : String(err)}` }, enc);
    }
  }
  const h = natsHeaders();
  h.set('Content-Type', enc === 'etf' ? ETF_CONTENT_TYPE : JSON_CONTENT_TYPE);
  const code = ERROR_CODES[r.reason] ?? 500;
  h.set('Nats-Service-Error', headerSafe(`${r.reason}: ${r.message}`));
  h.set('Nats-Service-Error-Code', String(code));
  const body =
    enc === 'etf'
      ? encode(tuple(atom('error'), tuple(atom(r.reason), r.message)))
      : Buffer.from(JSON.stringify({ error: { reason: r.reason, message: r.message } }));
  return { body, headers: h, error: { code, reason: r.reason, message: r.message } };
}

/** Header values cannot carry CR/LF and should stay short. */
function headerSafe(s: string): string {
  const one = s.replace(/[\r\n]+/g, ' ');
  return one.length > 512 ? `${one.slice(0, 509)}...` : one;
}
