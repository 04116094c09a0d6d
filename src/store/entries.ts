/**
 * The five tracking entry types (docs/tracking.md): validation at the edge and
 * the row each becomes. Field names are the contract. A bad entry is a
 * `bad_request` naming the field; nothing partial is ever written.
 */
import { randomUUID } from 'node:crypto';
import { Atom, isTermObject, type Term, type TermObject } from '../codec/terms.js';
import { asList, asNumber, asString, bool, int, num, oneOf, optInt, optNum, optStr, str, stringMap } from '../contract/args.js';
import { badRequest } from '../contract/errors.js';
import type { ArgSchema } from '../contract/schema.js';

export const FEEDBACK_TYPES = ['quality', 'accuracy', 'performance', 'usability', 'completeness', 'other'] as const;
export const EVOLUTION_TYPES = ['optimization', 'refinement', 'expansion', 'simplification', 'adaptation', 'other'] as const;
export const WINNERS = ['a', 'b', 'tie'] as const;

export type EntryKind = 'execution' | 'feedback' | 'evolution' | 'ab_result' | 'context_signature';

export interface TableSpec {
  table: string;
  /** Columns in insert order; `id` first. */
  columns: readonly string[];
  /** Postgres casts for parameters ($n::jsonb). */
  casts: Readonly<Record<string, string>>;
  /**
   * Column types for a batch insert as one array parameter per column
   * (`unnest($1::uuid[], ...)`); absent for tables with an array column,
   * which unnest would flatten.
   */
  arrayTypes?: readonly string[];
}

export const TABLES: Readonly<Record<EntryKind, TableSpec>> = {
  execution: {
    table: 'prompt_executions',
    columns: ['id', 'prompt_id', 'execution_time_ms', 'success', 'confidence_score', 'context_signature', 'response_length', 'timestamp', 'metadata'],
    casts: { metadata: 'jsonb', timestamp: 'timestamptz' },
    arrayTypes: ['uuid', 'text', 'int4', 'bool', 'float8', 'text', 'int4', 'timestamptz', 'jsonb'],
  },
  feedback: {
    table: 'prompt_feedback',
    columns: ['id', 'prompt_id', 'feedback_type', 'rating', 'comment', 'user_id', 'timestamp', 'context'],
    casts: { context: 'jsonb', timestamp: 'timestamptz' },
    arrayTypes: ['uuid', 'text', 'text', 'float8', 'text', 'text', 'timestamptz', 'jsonb'],
  },
  evolution: {
    table: 'prompt_evolutions',
    columns: ['id', 'original_prompt_id', 'evolved_prompt_id', 'evolution_type', 'performance_improvement', 'evolution_timestamp', 'evolution_metadata'],
    casts: { evolution_metadata: 'jsonb', evolution_timestamp: 'timestamptz' },
    arrayTypes: ['uuid', 'text', 'text', 'text', 'float8', 'timestamptz', 'jsonb'],
  },
  ab_result: {
    table: 'ab_test_results',
    columns: ['id', 'test_id', 'variant_a_prompt_id', 'variant_b_prompt_id', 'winner', 'confidence_level', 'sample_size', 'test_duration', 'test_timestamp', 'metrics'],
    casts: { metrics: 'jsonb', test_timestamp: 'timestamptz' },
    arrayTypes: ['uuid', 'text', 'text', 'text', 'text', 'float8', 'int4', 'int8', 'timestamptz', 'jsonb'],
  },
  context_signature: {
    table: 'context_signatures',
    columns: ['id', 'signature_hash', 'project_tech_stack', 'project_type', 'complexity_level', 'created_at', 'metadata'],
    casts: { metadata: 'jsonb', created_at: 'timestamptz', project_tech_stack: 'text[]' },
  },
};

const ID = { type: 'string (a UUID)', doc: 'the entry\'s own id: writing the same id twice stores it once, so a retried write never duplicates a row (default: a new UUID)' } as const;
const TS = (what: string) => ({ type: 'ISO-8601 string or integer unix ms', default: 'now', doc: what }) as const;
const STRING_MAP = 'map of string → string (at most 64 KiB)';

/**
 * The fields of each entry, for the op table's key check and the docs
 * (docs/ops.md, docs/tracking.md). `parseEntry` below reads exactly these.
 */
export const ENTRY_SCHEMAS: Readonly<Record<EntryKind, ArgSchema>> = {
  execution: {
    id: ID,
    prompt_id: { type: 'string (1..512 characters)', required: true, doc: 'the prompt that ran (choose_prompt\'s prompt_id in the closed loop)' },
    success: { type: 'boolean', required: true, doc: 'whether the answer was good' },
    execution_time_ms: { type: 'integer ≥ 0', required: true, doc: 'how long it took' },
    confidence_score: { type: 'number 0..1', doc: 'the caller\'s confidence in the answer' },
    context_signature: { type: 'string', doc: 'a ContextSignatureEntry\'s signature_hash' },
    response_length: { type: 'integer ≥ 0', doc: 'length of the answer' },
    timestamp: TS('when it ran'),
    metadata: { type: STRING_MAP, default: {}, doc: 'prompt (its text: what train learns from), model, task, language, domain, framework, template; experiment, model, generation for a closed-loop outcome; n and successes for an aggregate' },
  },
  feedback: {
    id: ID,
    prompt_id: { type: 'string (1..512 characters)', required: true, doc: 'the prompt the feedback is about' },
    feedback_type: { type: `one of: ${FEEDBACK_TYPES.join(', ')}`, required: true, doc: 'what was rated' },
    rating: { type: 'number', required: true, doc: 'the rating (train reads it as rating/5, clamped to 0..1)' },
    comment: { type: 'string (at most 10000 characters)', doc: 'free text' },
    user_id: { type: 'string', doc: 'who rated' },
    timestamp: TS('when it was given'),
    context: { type: STRING_MAP, default: {}, doc: 'model, task, ... (merged into the prompt\'s context for training)' },
  },
  evolution: {
    id: ID,
    original_prompt_id: { type: 'string (1..512 characters)', required: true, doc: 'the prompt before' },
    evolved_prompt_id: { type: 'string (1..512 characters)', required: true, doc: 'the prompt after' },
    evolution_type: { type: `one of: ${EVOLUTION_TYPES.join(', ')}`, required: true, doc: 'what kind of change' },
    performance_improvement: { type: 'number', required: true, doc: 'measured or estimated gain' },
    evolution_timestamp: TS('when it happened'),
    evolution_metadata: { type: STRING_MAP, default: {}, doc: 'anything else (the optimizer records proposer, evaluator, rounds, ...)' },
  },
  ab_result: {
    id: ID,
    test_id: { type: 'string (1..512 characters)', required: true, doc: 'the A/B test' },
    variant_a_prompt_id: { type: 'string (1..512 characters)', required: true, doc: 'variant a' },
    variant_b_prompt_id: { type: 'string (1..512 characters)', required: true, doc: 'variant b' },
    winner: { type: `one of: ${WINNERS.join(', ')}`, required: true, doc: 'which won' },
    confidence_level: { type: 'number 0..1', required: true, doc: 'confidence in the winner' },
    sample_size: { type: 'integer ≥ 0', required: true, doc: 'observations' },
    test_duration: { type: 'integer ≥ 0 (ms)', required: true, doc: 'how long the test ran' },
    test_timestamp: TS('when it ended'),
    metrics: { type: 'map of string → number', default: {}, doc: 'measured figures' },
  },
  context_signature: {
    id: ID,
    signature_hash: { type: 'string (1..512 characters)', required: true, doc: 'the signature (executions refer to it as context_signature)' },
    project_tech_stack: { type: 'list of strings (at most 100; stored lower-case)', default: [], doc: 'the project\'s technologies' },
    project_type: { type: 'string (1..512 characters)', required: true, doc: 'e.g. web_service' },
    complexity_level: { type: 'string (1..512 characters)', required: true, doc: 'e.g. low, medium, high' },
    created_at: TS('when it was made'),
    metadata: { type: STRING_MAP, default: {}, doc: 'anything else' },
  },
};

/** A validated entry: values in the order of its table's columns (jsonb as JSON text). */
export interface EntryRow {
  kind: EntryKind;
  id: string;
  values: Array<string | number | boolean | null | string[]>;
  /** An execution's metadata as given (read by the closed loop to tell an outcome; not journaled: the values hold it). */
  meta?: Readonly<Record<string, string>>;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const MAX_JSON_BYTES = 64 * 1024;

function entryId(e: TermObject): string {
  const id = optStr(e, 'id', { max: 36 });
  if (id === undefined) return randomUUID();
  if (!UUID_RE.test(id)) throw badRequest('id', 'expected a UUID');
  return id.toLowerCase();
}

/** Now as ISO-8601 text, made once per millisecond: a burst of entries shares it (a Date and its text per entry was ~7% of a tracked entry's CPU). */
let nowMs = -1;
let nowText = '';
function nowIso(): string {
  const ms = Date.now();
  if (ms !== nowMs) {
    nowMs = ms;
    nowText = new Date(ms).toISOString();
  }
  return nowText;
}

/** ISO-8601 text or integer unix milliseconds; defaults to now when absent. */
function timestamp(e: TermObject, field: string): string {
  const v = e[field];
  if (v === undefined || v === null) return nowIso();
  let d: Date;
  if (typeof v === 'string') {
    if (!/^\d{4}-\d{2}-\d{2}([T ][\d:.]+(Z|[+-]\d{2}:?\d{2})?)?$/.test(v)) throw badRequest(field, 'expected an ISO-8601 timestamp or unix milliseconds');
    d = new Date(v);
  } else if (typeof v === 'number' && Number.isInteger(v)) d = new Date(v);
  else throw badRequest(field, 'expected an ISO-8601 timestamp or unix milliseconds');
  if (Number.isNaN(d.getTime()) || d.getUTCFullYear() < 1970 || d.getUTCFullYear() > 9999) throw badRequest(field, 'expected a valid timestamp');
  return d.toISOString();
}

function jsonField(v: Term | undefined, field: string, convert: (v: Term | undefined, field: string) => Record<string, string | number>): string {
  return jsonText(v === undefined || v === null ? {} : convert(v, field), field);
}

function jsonText(obj: Record<string, string | number>, field: string): string {
  const text = JSON.stringify(obj);
  // A JS string's length bounds its UTF-8 size from below and 3× from above: measure only when it could be over.
  if (text.length * 3 > MAX_JSON_BYTES && Buffer.byteLength(text) > MAX_JSON_BYTES) throw badRequest(field, `expected at most ${MAX_JSON_BYTES} bytes`);
  return text;
}

/** string → number maps (A/B metrics). */
function floatMap(v: Term | undefined, field: string): Record<string, number> {
  if (!isTermObject(v)) throw badRequest(field, 'expected a map of string to number');
  const out: Record<string, number> = {};
  for (const k of Object.keys(v)) out[k] = asNumber(v[k], `${field}.${k}`);
  return out;
}

const text = (e: TermObject, k: string): string => str(e, k, { min: 1, max: 512 });

export function parseEntry(kind: EntryKind, e: TermObject): EntryRow {
  const id = entryId(e);
  switch (kind) {
    case 'execution': {
      const promptId = text(e, 'prompt_id');
      const meta = e.metadata === undefined || e.metadata === null ? {} : stringMap(e.metadata, 'metadata', { maxBytes: MAX_JSON_BYTES });
      const metadata = jsonText(meta, 'metadata');
      return {
        kind,
        id,
        values: [
          id,
          promptId,
          int(e, 'execution_time_ms', { min: 0, max: 2_147_483_647 }),
          bool(e, 'success'),
          optNum(e, 'confidence_score', { min: 0, max: 1 }) ?? null,
          optStr(e, 'context_signature', { max: 512 }) ?? null,
          optInt(e, 'response_length', { min: 0, max: 2_147_483_647 }) ?? null,
          timestamp(e, 'timestamp'),
          metadata,
        ],
        meta,
      };
    }
    case 'feedback':
      return {
        kind,
        id,
        values: [
          id,
          text(e, 'prompt_id'),
          oneOf(e, 'feedback_type', FEEDBACK_TYPES),
          num(e, 'rating', { min: -1e6, max: 1e6 }),
          optStr(e, 'comment', { max: 10_000 }) ?? null,
          optStr(e, 'user_id', { max: 512 }) ?? null,
          timestamp(e, 'timestamp'),
          jsonField(e.context, 'context', (v, f) => stringMap(v, f, { maxBytes: MAX_JSON_BYTES })),
        ],
      };
    case 'evolution':
      return {
        kind,
        id,
        values: [
          id,
          text(e, 'original_prompt_id'),
          text(e, 'evolved_prompt_id'),
          oneOf(e, 'evolution_type', EVOLUTION_TYPES),
          num(e, 'performance_improvement'),
          timestamp(e, 'evolution_timestamp'),
          jsonField(e.evolution_metadata, 'evolution_metadata', (v, f) => stringMap(v, f, { maxBytes: MAX_JSON_BYTES })),
        ],
      };
    case 'ab_result':
      return {
        kind,
        id,
        values: [
          id,
          text(e, 'test_id'),
          text(e, 'variant_a_prompt_id'),
          text(e, 'variant_b_prompt_id'),
          oneOf(e, 'winner', WINNERS),
          num(e, 'confidence_level', { min: 0, max: 1 }),
          int(e, 'sample_size', { min: 0, max: 2_147_483_647 }),
          int(e, 'test_duration', { min: 0 }),
          timestamp(e, 'test_timestamp'),
          jsonField(e.metrics, 'metrics', floatMap),
        ],
      };
    case 'context_signature': {
      const stack = e.project_tech_stack === undefined ? [] : asList(e.project_tech_stack, 'project_tech_stack', { max: 100 });
      return {
        kind,
        id,
        values: [
          id,
          text(e, 'signature_hash'),
          stack.map((s, i) => asString(s instanceof Atom ? s.name : s, `project_tech_stack[${i}]`, { max: 200 }).toLowerCase()),
          text(e, 'project_type'),
          text(e, 'complexity_level'),
          timestamp(e, 'created_at'),
          jsonField(e.metadata, 'metadata', (v, f) => stringMap(v, f, { maxBytes: MAX_JSON_BYTES })),
        ],
      };
    }
  }
}

/** An evolution written by the engine itself (the optimizer, the closed loop): already typed, so no term readers. */
export interface EvolutionInput {
  original_prompt_id: string;
  evolved_prompt_id: string;
  evolution_type: (typeof EVOLUTION_TYPES)[number];
  performance_improvement: number;
  evolution_timestamp?: string;
  evolution_metadata: Record<string, string>;
}

export function evolutionRow(e: EvolutionInput, id: string = randomUUID()): EntryRow {
  return {
    kind: 'evolution',
    id,
    values: [id, e.original_prompt_id, e.evolved_prompt_id, e.evolution_type, e.performance_improvement, e.evolution_timestamp ?? nowIso(), JSON.stringify(e.evolution_metadata)],
  };
}

/** An A/B result written by the engine itself (a retired variant of the closed loop). */
export interface AbResultInput {
  test_id: string;
  variant_a_prompt_id: string;
  variant_b_prompt_id: string;
  winner: (typeof WINNERS)[number];
  confidence_level: number;
  sample_size: number;
  test_duration: number;
  test_timestamp?: string;
  metrics: Record<string, number>;
}

export function abResultRow(e: AbResultInput, id: string = randomUUID()): EntryRow {
  return {
    kind: 'ab_result',
    id,
    values: [id, e.test_id, e.variant_a_prompt_id, e.variant_b_prompt_id, e.winner, e.confidence_level, e.sample_size, e.test_duration, e.test_timestamp ?? nowIso(), JSON.stringify(e.metrics)],
  };
}
