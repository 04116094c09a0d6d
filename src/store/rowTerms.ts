/**
 * Rows as the contract returns them: field names as atoms, user maps with
 * binary keys, floats as floats, timestamps ISO-8601. The one place that
 * turns database rows into Erlang-shaped terms.
 */
import { float, newMap, record, type Term, type TermObject } from '../codec/terms.js';
import type { Row } from './db.js';
import type { PromptAggregate } from './queries.js';

export function aggregateRecord(promptId: string, a: PromptAggregate): TermObject {
  return record({
    prompt_id: promptId,
    count: a.count,
    successes: a.successes,
    success_rate: float(a.success_rate),
    mean_confidence: float(a.mean_confidence),
    p50_ms: float(a.p50_ms),
    p95_ms: float(a.p95_ms),
  });
}

const FLOAT_COLUMNS = new Set(['confidence_score', 'rating', 'performance_improvement', 'confidence_level']);
const JSON_COLUMNS = new Set(['metadata', 'context', 'evolution_metadata', 'metrics']);

/** A row as the contract returns it: field names as atoms, user maps with binary keys, floats as floats, timestamps ISO-8601. */
export function toRecord(r: Row): TermObject {
  const out: Record<string, Term | undefined> = {};
  for (const [k, v] of Object.entries(r)) {
    if (k === 'seq') continue;
    if (v === null || v === undefined) out[k] = null;
    else if (v instanceof Date) out[k] = v.toISOString();
    else if (FLOAT_COLUMNS.has(k)) out[k] = float(Number(v));
    else if (JSON_COLUMNS.has(k)) out[k] = userMap(v as Record<string, unknown>, k === 'metrics');
    else if (Array.isArray(v)) out[k] = v.map(String);
    else if (typeof v === 'bigint') out[k] = Number(v);
    else out[k] = v as Term;
  }
  return record(out);
}

function userMap(v: Record<string, unknown>, floats: boolean): TermObject {
  const m = newMap();
  for (const [k, x] of Object.entries(v)) m[k] = floats ? float(Number(x)) : String(x);
  return m;
}

export function iso(v: unknown): string {
  return v instanceof Date ? v.toISOString() : new Date(String(v)).toISOString();
}
