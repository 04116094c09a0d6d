/**
 * The five tracking entry types (docs/tracking.md), each declared once as
 * its columns: name (the argument's name and the column's), PostgreSQL
 * type, what the argument accepts (for the key check, `describe` and the
 * docs) and how it is read from a request. The table spec the writer
 * inserts with (COPY, unnest), the argument schema the op table checks,
 * `parseEntry` and the rows the engine writes itself are all derived from
 * it; test/store.test.ts checks the declaration against the live table.
 * Field names are the contract. A bad entry is a `bad_request` naming the
 * field; nothing partial is ever written.
 */
import { randomUUID } from 'node:crypto';
import { Atom, isTermObject, type Term, type TermObject } from '../codec/terms.js';
import { asList, asNumber, asString, bool, int, num, oneOf, optInt, optNum, optStr, str, stringMap } from '../contract/args.js';
import { badRequest } from '../contract/errors.js';
import type { ArgSchema, ArgSpec } from '../contract/schema.js';

export const FEEDBACK_TYPES = ['quality', 'accuracy', 'performance', 'usability', 'completeness', 'other'] as const;
export const EVOLUTION_TYPES = ['optimization', 'refinement', 'expansion', 'simplification', 'adaptation', 'other'] as const;
export const WINNERS = ['a', 'b', 'tie'] as const;

export type EntryKind = 'execution' | 'feedback' | 'evolution' | 'ab_result' | 'context_signature';

type Value = string | number | boolean | null | string[];

/** What a column's reader may keep beside the value (an execution's metadata as a map, for the closed loop). */
interface ReadContext {
  id: string;
  meta?: Readonly<Record<string, string>>;
}

interface Column {
  readonly name: string;
  /** Its PostgreSQL type (`int4`, `jsonb`, `text[]`, ...). */
  readonly pg: string;
  readonly arg: ArgSpec;
  /** The value from a request's argument map (throws `bad_request` naming the field). */
  read(e: TermObject, ctx: ReadContext): Value;
  /** The value when the engine writes the entry itself and leaves the field out. */
  dflt?(): Value;
}

export interface EntryDeclaration {
  /** The entry's name in the contract (`PromptExecutionEntry`). */
  readonly title: string;
  readonly table: string;
  /** Columns in insert order; `id` first. */
  readonly columns: readonly Column[];
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const MAX_JSON_BYTES = 64 * 1024;
const MAX_INT4 = 2_147_483_647;
const STRING_MAP = 'map of string → string (at most 64 KiB)';

const id: Column = {
  name: 'id',
  pg: 'uuid',
  arg: { type: 'string (a UUID)', doc: "the entry's own id: writing the same id twice stores it once, so a retried write never duplicates a row (default: a new UUID)" },
  read: (_e, ctx) => ctx.id,
  dflt: () => randomUUID(),
};
const requiredText = (name: string, doc: string): Column => ({ name, pg: 'text', arg: { type: 'string (1..512 characters)', required: true, doc }, read: (e) => str(e, name, { min: 1, max: 512 }) });
const optionalText = (name: string, max: number, doc: string): Column => ({ name, pg: 'text', arg: { type: max === 512 ? 'string' : `string (at most ${max} characters)`, doc }, read: (e) => optStr(e, name, { max }) ?? null });
const choice = (name: string, allowed: readonly string[], doc: string): Column => ({ name, pg: 'text', arg: { type: `one of: ${allowed.join(', ')}`, required: true, doc }, read: (e) => oneOf(e, name, allowed) });
const at = (name: string, doc: string): Column => ({ name, pg: 'timestamptz', arg: { type: 'ISO-8601 string or integer unix ms', default: 'now', doc }, read: (e) => timestamp(e, name), dflt: nowIso });
const stringMapColumn = (name: string, doc: string, keep?: (ctx: ReadContext, m: Record<string, string>) => void): Column => ({
  name,
  pg: 'jsonb',
  arg: { type: STRING_MAP, default: {}, doc },
  read: (e, ctx) => {
    const v = e[name];
    const m = v === undefined || v === null ? {} : stringMap(v, name, { maxBytes: MAX_JSON_BYTES });
    keep?.(ctx, m);
    return jsonText(m, name);
  },
  dflt: () => '{}',
});
const optionalInt = (name: string, doc: string): Column => ({ name, pg: 'int4', arg: { type: 'integer ≥ 0', doc }, read: (e) => optInt(e, name, { min: 0, max: MAX_INT4 }) ?? null });
const optionalNumber = (name: string, range: { min: number; max?: number }, doc: string): Column => ({
  name,
  pg: 'float8',
  arg: { type: range.max === undefined ? `number ≥ ${range.min}` : `number ${range.min}..${range.max}`, doc },
  read: (e) => optNum(e, name, range) ?? null,
});

/** The five entries, declared once. */
export const ENTRIES: Readonly<Record<EntryKind, EntryDeclaration>> = {
  execution: {
    title: 'PromptExecutionEntry',
    table: 'prompt_executions',
    columns: [
      id,
      requiredText('prompt_id', "the prompt that ran (choose_prompt's prompt_id in the closed loop)"),
      { name: 'execution_time_ms', pg: 'int4', arg: { type: 'integer ≥ 0', required: true, doc: 'how long it took (the latency the closed loop weighs)' }, read: (e) => int(e, 'execution_time_ms', { min: 0, max: MAX_INT4 }) },
      {
        name: 'success',
        pg: 'bool',
        arg: { type: 'boolean', requiredWhen: 'unless score is given (then it is score ≥ 0.5)', doc: 'whether the answer was good' },
        read: (e) => {
          if (e.success !== undefined && e.success !== null) return bool(e, 'success');
          const score = optNum(e, 'score', { min: 0, max: 1 });
          if (score === undefined) throw badRequest('success', 'is required (a boolean), or give a score');
          return score >= 0.5;
        },
      },
      optionalNumber('confidence_score', { min: 0, max: 1 }, "the caller's confidence in the answer"),
      optionalText('context_signature', 512, "a ContextSignatureEntry's signature_hash"),
      optionalInt('response_length', 'length of the answer'),
      at('timestamp', 'when it ran'),
      stringMapColumn('metadata', 'prompt (its text: what train learns from), model, task, language, domain, framework, template; experiment, model, generation for a closed-loop outcome; n and successes for an aggregate', (ctx, m) => (ctx.meta = m)),
      optionalNumber('score', { min: 0, max: 1 }, "a graded outcome (a judge's score, stars scaled to 0..1); the closed loop's score and reward objectives use it, success when absent"),
      optionalInt('input_tokens', "the prompt's tokens on the model (cost objectives)"),
      optionalInt('output_tokens', "the answer's tokens (cost objectives)"),
      optionalNumber('cost', { min: 0 }, 'what the call cost, in any unit the app uses consistently (cost objectives)'),
    ],
  },
  feedback: {
    title: 'PromptFeedbackEntry',
    table: 'prompt_feedback',
    columns: [
      id,
      requiredText('prompt_id', 'the prompt the feedback is about'),
      choice('feedback_type', FEEDBACK_TYPES, 'what was rated'),
      { name: 'rating', pg: 'float8', arg: { type: 'number', required: true, doc: 'the rating (read as rating/5, clamped to 0..1: by train, and by the closed loop as a late score when context names the choice)' }, read: (e) => num(e, 'rating', { min: -1e6, max: 1e6 }) },
      optionalText('comment', 10_000, 'free text'),
      optionalText('user_id', 512, 'who rated'),
      at('timestamp', 'when it was given'),
      stringMapColumn('context', "model, task, ... (merged into the prompt's context for training); experiment, model, generation (a choice's metadata) make it a late outcome of that choice", (ctx, m) => (ctx.meta = m)),
    ],
  },
  evolution: {
    title: 'PromptEvolutionEntry',
    table: 'prompt_evolutions',
    columns: [
      id,
      requiredText('original_prompt_id', 'the prompt before'),
      requiredText('evolved_prompt_id', 'the prompt after'),
      choice('evolution_type', EVOLUTION_TYPES, 'what kind of change'),
      { name: 'performance_improvement', pg: 'float8', arg: { type: 'number', required: true, doc: 'measured or estimated gain' }, read: (e) => num(e, 'performance_improvement') },
      at('evolution_timestamp', 'when it happened'),
      stringMapColumn('evolution_metadata', 'anything else (the optimizer records proposer, evaluator, rounds, ...)'),
    ],
  },
  ab_result: {
    title: 'ABTestResultEntry',
    table: 'ab_test_results',
    columns: [
      id,
      requiredText('test_id', 'the A/B test'),
      requiredText('variant_a_prompt_id', 'variant a'),
      requiredText('variant_b_prompt_id', 'variant b'),
      choice('winner', WINNERS, 'which won'),
      { name: 'confidence_level', pg: 'float8', arg: { type: 'number 0..1', required: true, doc: 'confidence in the winner' }, read: (e) => num(e, 'confidence_level', { min: 0, max: 1 }) },
      { name: 'sample_size', pg: 'int4', arg: { type: 'integer ≥ 0', required: true, doc: 'observations' }, read: (e) => int(e, 'sample_size', { min: 0, max: MAX_INT4 }) },
      { name: 'test_duration', pg: 'int8', arg: { type: 'integer ≥ 0 (ms)', required: true, doc: 'how long the test ran' }, read: (e) => int(e, 'test_duration', { min: 0 }) },
      at('test_timestamp', 'when it ended'),
      { name: 'metrics', pg: 'jsonb', arg: { type: 'map of string → number', default: {}, doc: 'measured figures' }, read: (e) => jsonText(e.metrics === undefined || e.metrics === null ? {} : floatMap(e.metrics, 'metrics'), 'metrics'), dflt: () => '{}' },
    ],
  },
  context_signature: {
    title: 'ContextSignatureEntry',
    table: 'context_signatures',
    columns: [
      id,
      requiredText('signature_hash', 'the signature (executions refer to it as context_signature)'),
      {
        name: 'project_tech_stack',
        pg: 'text[]',
        arg: { type: 'list of strings (at most 100; stored lower-case)', default: [], doc: "the project's technologies" },
        read: (e) =>
          (e.project_tech_stack === undefined ? [] : asList(e.project_tech_stack, 'project_tech_stack', { max: 100 })).map((x, i) => asString(x instanceof Atom ? x.name : x, `project_tech_stack[${i}]`, { max: 200 }).toLowerCase()),
        dflt: () => [],
      },
      requiredText('project_type', 'e.g. web_service'),
      requiredText('complexity_level', 'e.g. low, medium, high'),
      at('created_at', 'when it was made'),
      stringMapColumn('metadata', 'anything else'),
    ],
  },
};

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

const CAST_TYPES = new Set(['jsonb', 'timestamptz', 'text[]']);

/** Something derived from every declaration. */
function perKind<T>(f: (d: EntryDeclaration) => T): Record<EntryKind, T> {
  const e = ENTRIES;
  return { execution: f(e.execution), feedback: f(e.feedback), evolution: f(e.evolution), ab_result: f(e.ab_result), context_signature: f(e.context_signature) };
}

/** What the writer inserts with, derived from the declarations. */
export const TABLES: Readonly<Record<EntryKind, TableSpec>> = perKind((d) => ({
  table: d.table,
  columns: d.columns.map((c) => c.name),
  casts: Object.fromEntries(d.columns.filter((c) => CAST_TYPES.has(c.pg)).map((c) => [c.name, c.pg])),
  ...(d.columns.some((c) => c.pg.endsWith('[]')) ? {} : { arrayTypes: d.columns.map((c) => c.pg) }),
}));

/** The fields of each entry, for the op table's key check and the docs (docs/ops.md, docs/tracking.md). */
export const ENTRY_SCHEMAS: Readonly<Record<EntryKind, ArgSchema>> = perKind((d) => Object.fromEntries(d.columns.map((c) => [c.name, c.arg])));

/** A validated entry: values in the order of its table's columns (jsonb as JSON text). */
export interface EntryRow {
  kind: EntryKind;
  id: string;
  values: Array<string | number | boolean | null | string[]>;
  /** An execution's metadata, a rating's context, as given (read by the closed loop to tell an outcome; not journaled: the values hold it). */
  meta?: Readonly<Record<string, string>>;
}


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


/** A request's entry as its row: every column read from its argument (a bad one is a `bad_request` naming it). */
export function parseEntry(kind: EntryKind, e: TermObject): EntryRow {
  const ctx: ReadContext = { id: entryId(e) };
  const values = ENTRIES[kind].columns.map((c) => c.read(e, ctx));
  return ctx.meta === undefined ? { kind, id: ctx.id, values } : { kind, id: ctx.id, values, meta: ctx.meta };
}

/** An entry the engine writes itself (already typed: no term readers), by column name; a field left out takes its default. */
function engineRow(kind: EntryKind, fields: Readonly<Record<string, Value | Readonly<Record<string, string | number>> | undefined>>): EntryRow {
  const values = ENTRIES[kind].columns.map((c) => {
    const v = fields[c.name];
    if (v === undefined) {
      if (c.dflt === undefined) throw new Error(`${kind}.${c.name} is required`);
      return c.dflt();
    }
    return c.pg === 'jsonb' && typeof v === 'object' && v !== null && !Array.isArray(v) ? JSON.stringify(v) : (v as Value);
  });
  return { kind, id: String(values[0]), values };
}

/** An evolution written by the engine itself (the optimizer, the closed loop). */
export interface EvolutionInput {
  original_prompt_id: string;
  evolved_prompt_id: string;
  evolution_type: (typeof EVOLUTION_TYPES)[number];
  performance_improvement: number;
  evolution_timestamp?: string;
  evolution_metadata: Record<string, string>;
}

export const evolutionRow = (e: EvolutionInput): EntryRow => engineRow('evolution', { ...e });

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

export const abResultRow = (e: AbResultInput): EntryRow => engineRow('ab_result', { ...e });
