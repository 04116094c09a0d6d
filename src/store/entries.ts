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
import type { TermObject } from '../codec/terms.js';
import { badRequest } from '../contract/errors.js';
import { boolean, integer, listOf, number, numberMap, oneOf, readArgs, string, stringMap, timestamp, type ArgSchema, type ArgSpec } from '../contract/schema.js';

export const FEEDBACK_TYPES = ['quality', 'accuracy', 'performance', 'usability', 'completeness', 'other'] as const;
export const EVOLUTION_TYPES = ['optimization', 'refinement', 'expansion', 'simplification', 'adaptation', 'other'] as const;
export const WINNERS = ['a', 'b', 'tie'] as const;

export type EntryKind = 'execution' | 'feedback' | 'evolution' | 'ab_result' | 'context_signature';

type Value = string | number | boolean | null | string[];

interface Column {
  readonly name: string;
  /** Its PostgreSQL type (`int4`, `jsonb`, `text[]`, ...). */
  readonly pg: string;
  /** The argument: its words, bounds, default and reader (contract/schema.ts). */
  readonly arg: ArgSpec;
  /** The column's value from the argument's (absent: the value itself, or null when left out). */
  readonly store?: (v: unknown) => Value;
}

export interface EntryDeclaration {
  /** The entry's name in the contract (`PromptExecutionEntry`). */
  readonly title: string;
  readonly table: string;
  /** Columns in insert order; `id` first. */
  readonly columns: readonly Column[];
  /** The string map kept beside the row as its `meta` (what the closed loop reads an outcome from). */
  readonly meta?: string;
  /** Rules across arguments, on what was read (an execution's success from its score). */
  readonly refine?: (a: Record<string, unknown>) => void;
}

export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const MAX_JSON_BYTES = 64 * 1024;
const MAX_INT4 = 2_147_483_647;

const id: Column = {
  name: 'id',
  pg: 'uuid',
  arg: string({ max: 36, pattern: { re: UUID_RE, says: 'a UUID' }, doc: "the entry's own id: writing the same id twice stores it once, so a retried write never duplicates a row (default: a new UUID)" }),
  store: (v) => (v === undefined ? randomUUID() : (v as string).toLowerCase()),
};
const requiredText = (name: string, doc: string): Column => ({ name, pg: 'text', arg: string({ min: 1, max: 512, required: true, doc }) });
const optionalText = (name: string, max: number, doc: string): Column => ({ name, pg: 'text', arg: string({ max, doc }) });
const choice = (name: string, allowed: readonly string[], doc: string): Column => ({ name, pg: 'text', arg: oneOf(allowed, { required: true, doc }) });
const at = (name: string, doc: string): Column => ({ name, pg: 'timestamptz', arg: timestamp({ defaultNow: true, doc }) });
const json = (name: string) => (v: unknown): Value => jsonText(v as Record<string, string | number>, name);
const stringMapColumn = (name: string, doc: string): Column => ({ name, pg: 'jsonb', arg: stringMap({ maxBytes: MAX_JSON_BYTES, default: {}, doc }), store: json(name) });
const optionalInt = (name: string, doc: string): Column => ({ name, pg: 'int4', arg: integer({ min: 0, max: MAX_INT4, doc }) });
const requiredInt = (name: string, pg: 'int4' | 'int8', doc: string): Column => ({ name, pg, arg: integer({ min: 0, max: pg === 'int4' ? MAX_INT4 : Number.MAX_SAFE_INTEGER, required: true, doc }) });
const optionalNumber = (name: string, range: { min: number; max?: number }, doc: string): Column => ({ name, pg: 'float8', arg: number({ ...range, doc }) });
const requiredNumber = (name: string, range: { min?: number; max?: number }, doc: string): Column => ({ name, pg: 'float8', arg: number({ ...range, required: true, doc }) });

/** An experiment's name and its model's, in characters: what `choose_prompt` takes, and what an outcome may name. */
export const LOOP_NAME_MAX = 200;
/** A call's cost, at most (a typo must not swamp an experiment's sums). */
export const MAX_COST = 1e9;

/**
 * A closed-loop outcome's (or late rating's) names, checked here as the counting trigger will key its
 * counts by them: a name no experiment can have is refused with the field, not by the store's index.
 */
function loopNames(map: unknown, field: string): void {
  const m = map as Readonly<Record<string, string>> | undefined;
  if (m?.experiment === undefined) return;
  for (const k of ['experiment', 'model'] as const) {
    const v = m[k];
    if (v !== undefined && v.length > LOOP_NAME_MAX) throw badRequest(`${field}.${k}`, `expected at most ${LOOP_NAME_MAX} characters (${k === 'experiment' ? "an experiment's name" : "an experiment's model"})`);
  }
}

/** The five entries, declared once. */
export const ENTRIES: Readonly<Record<EntryKind, EntryDeclaration>> = {
  execution: {
    title: 'PromptExecutionEntry',
    table: 'prompt_executions',
    columns: [
      id,
      requiredText('prompt_id', "the prompt that ran (choose_prompt's prompt_id in the closed loop)"),
      requiredInt('execution_time_ms', 'int4', 'how long it took (the latency the closed loop weighs)'),
      { name: 'success', pg: 'bool', arg: boolean({ requiredWhen: 'unless score is given (then it is score ≥ 0.5)', doc: 'whether the answer was good' }) },
      optionalNumber('confidence_score', { min: 0, max: 1 }, "the caller's confidence in the answer"),
      optionalText('context_signature', 512, "a ContextSignatureEntry's signature_hash"),
      optionalInt('response_length', 'length of the answer'),
      at('timestamp', 'when it ran'),
      stringMapColumn('metadata', 'prompt (its text: what train learns from), model, task, language, domain, framework, template; experiment, model, generation for a closed-loop outcome; n and successes for an aggregate'),
      optionalNumber('score', { min: 0, max: 1 }, "a graded outcome (a judge's score, stars scaled to 0..1); the closed loop's score and reward objectives use it, success when absent"),
      optionalInt('input_tokens', "the prompt's tokens on the model (cost objectives)"),
      optionalInt('output_tokens', "the answer's tokens (cost objectives)"),
      optionalNumber('cost', { min: 0, max: MAX_COST }, 'what the call cost, in any unit the app uses consistently (cost objectives)'),
    ],
    meta: 'metadata',
    refine: (a) => {
      loopNames(a.metadata, 'metadata');
      if (a.success !== undefined) return;
      if (a.score === undefined) throw badRequest('success', 'is required (a boolean), or give a score');
      a.success = (a.score as number) >= 0.5;
    },
  },
  feedback: {
    title: 'PromptFeedbackEntry',
    table: 'prompt_feedback',
    columns: [
      id,
      requiredText('prompt_id', 'the prompt the feedback is about'),
      choice('feedback_type', FEEDBACK_TYPES, 'what was rated'),
      requiredNumber('rating', { min: -1e6, max: 1e6 }, 'the rating (read as rating/5, clamped to 0..1: by train, and by the closed loop as a late score when context names the choice)'),
      optionalText('comment', 10_000, 'free text'),
      optionalText('user_id', 512, 'who rated'),
      at('timestamp', 'when it was given'),
      stringMapColumn('context', "model, task, ... (merged into the prompt's context for training); experiment, model, generation (a choice's metadata) make it a late outcome of that choice"),
    ],
    meta: 'context',
    refine: (a) => loopNames(a.context, 'context'),
  },
  evolution: {
    title: 'PromptEvolutionEntry',
    table: 'prompt_evolutions',
    columns: [
      id,
      requiredText('original_prompt_id', 'the prompt before'),
      requiredText('evolved_prompt_id', 'the prompt after'),
      choice('evolution_type', EVOLUTION_TYPES, 'what kind of change'),
      requiredNumber('performance_improvement', {}, 'measured or estimated gain'),
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
      requiredNumber('confidence_level', { min: 0, max: 1 }, 'confidence in the winner'),
      requiredInt('sample_size', 'int4', 'observations'),
      requiredInt('test_duration', 'int8', 'how long the test ran, in ms'),
      at('test_timestamp', 'when it ended'),
      { name: 'metrics', pg: 'jsonb', arg: numberMap({ default: {}, doc: 'measured figures' }), store: json('metrics') },
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
        arg: listOf(string({ max: 200 }), { max: 100, default: [], doc: "the project's technologies (stored lower-case)" }),
        store: (v) => (v as string[]).map((x) => x.toLowerCase()),
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

function jsonText(obj: Record<string, string | number>, field: string): string {
  const text = JSON.stringify(obj);
  // A JS string's length bounds its UTF-8 size from below and 3× from above: measure only when it could be over.
  if (text.length * 3 > MAX_JSON_BYTES && Buffer.byteLength(text) > MAX_JSON_BYTES) throw badRequest(field, `expected at most ${MAX_JSON_BYTES} bytes`);
  return text;
}

/** A request's entry as its row: every column read by its argument's spec (a bad one is a `bad_request` naming it). */
export function parseEntry(kind: EntryKind, e: TermObject): EntryRow {
  return entryRow(kind, readArgs(e, ENTRY_SCHEMAS[kind]) as Record<string, unknown>);
}

/** The column that says when an entry happened (`timestamp`, `evolution_timestamp`, ...): the time of the call when absent. */
export function whenColumnOf(kind: EntryKind): string {
  return ENTRIES[kind].columns.find((c) => c.pg === 'timestamptz')!.name;
}

/** The row of arguments already read by `ENTRY_SCHEMAS[kind]` (the op table reads them; `refine` makes the row). */
export function entryRow(kind: EntryKind, a: Record<string, unknown>): EntryRow {
  const d = ENTRIES[kind];
  d.refine?.(a);
  const values = d.columns.map((c) => columnValue(c, a[c.name]));
  const id = values[0] as string;
  return d.meta === undefined ? { kind, id, values } : { kind, id, values, meta: (a[d.meta] ?? {}) as Readonly<Record<string, string>> };
}

function columnValue(c: Column, v: unknown): Value {
  if (c.store !== undefined) return c.store(v);
  return v === undefined ? null : (v as Value);
}

/** An entry the engine writes itself (already typed: no term readers), by column name; a field left out takes its default. */
function engineRow(kind: EntryKind, fields: Readonly<Record<string, Value | Readonly<Record<string, string | number>> | undefined>>): EntryRow {
  const values = ENTRIES[kind].columns.map((c) => {
    const v = fields[c.name];
    if (v !== undefined) return columnValue(c, v);
    if (c.arg.required === true) throw new Error(`${kind}.${c.name} is required`);
    return columnValue(c, c.arg.fallback?.());
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
