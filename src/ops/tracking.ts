/**
 * Ops of the tracking store: `track_*` (answered with the id once the row is
 * durable), `query` (seven kinds), `prompt_stats` (per-prompt aggregates).
 */
import { record } from '../codec/terms.js';
import { ENTRIES, ENTRY_SCHEMAS, entryRow, UUID_RE, type EntryKind, type EntryRow } from '../store/entries.js';
import { QUERY_KINDS, QUERY_REPLY_BYTES, type QueryArgs, type QueryKind } from '../store/queries.js';
import { aggregateRecord } from '../store/rowTerms.js';
import type { Json } from '../codec/json.js';
import { alias, either, integer, listOf, number, oneOf, string, type ArgSchema, type ArgsOf } from '../contract/schema.js';
import { typedOp, type OpSpec } from './types.js';
import { badRequest } from '../contract/errors.js';
import { reportsOutcome } from '../experiments/service.js';

function trackOp(name: string, kind: EntryKind): OpSpec<unknown> {
  return typedOp<ArgSchema, EntryRow>({
    name,
    summary: `record a ${ENTRIES[kind].title} (docs/tracking.md); answered with its id once the row is durable`,
    durableKind: kind,
    args: ENTRY_SCHEMAS[kind],
    reply: '%{id: binary} once the row is committed, or fsync\'d to the journal while the database is unreachable',
    errors: { unavailable: 'the tracking store could not open (e.g. a PGlite data directory held by another process)' },
    examples: [TRACK_EXAMPLES[kind]],
    refine: (a) => entryRow(kind, a as Record<string, unknown>),
    async handle(row, { engine }) {
      // A closed-loop outcome goes through the experiments, which count it with its row.
      if (reportsOutcome(row)) await (await engine.service('experiments')).track(row);
      else await (await engine.service('store')).write(row);
      return record({ id: row.id });
    },
  });
}

const TRACK_EXAMPLES: Record<EntryKind, Json> = {
  execution: { prompt_id: 'p-1', success: true, execution_time_ms: 420, confidence_score: 0.9, metadata: { prompt: 'Classify the ticket.', model: 'gpt-4o-mini', task: 'triage' } },
  feedback: { prompt_id: 'p-1', feedback_type: 'quality', rating: 4, comment: 'clear' },
  evolution: { original_prompt_id: 'p-1', evolved_prompt_id: 'p-2', evolution_type: 'refinement', performance_improvement: 0.05 },
  ab_result: { test_id: 't-1', variant_a_prompt_id: 'p-1', variant_b_prompt_id: 'p-2', winner: 'b', confidence_level: 0.95, sample_size: 400, test_duration: 86400000, metrics: { success_rate_b: 0.81 } },
  context_signature: { signature_hash: 'sig-1', project_tech_stack: ['elixir', 'phoenix'], project_type: 'web_service', complexity_level: 'medium' },
};

const STACK_DOC = 'technologies to match (a string or a list of strings)';
const DURATION = /^\s*(\d+)\s*(ms|s|m|h|d)\s*$/;
const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
/** The longest window a query takes: 100 years. */
const MAX_WINDOW_MS = 100 * 365.25 * 86_400_000;
const PROMPT_ID_MAX = 512;

const QUERY_ARGS = {
  kind: oneOf(QUERY_KINDS, { required: true, doc: 'which query' }),
  limit: integer({ min: 1, max: 10_000, default: 100, doc: `at most this many rows, and at most ${QUERY_REPLY_BYTES / 1024 / 1024} MiB of their text (past it: bad_request saying how many fit)` }),
  id: string({ max: 36, pattern: { re: UUID_RE, says: 'a UUID' }, requiredWhen: 'kind by_id', doc: "the entry's id" }),
  prompt_id: string({ max: PROMPT_ID_MAX, requiredWhen: 'kind prompt_executions, evolution_history', doc: 'the prompt (recent_feedback: optional filter)' }),
  project_tech_stack: either(string({ max: 200 }), listOf(string({ max: 200 }), { max: 100 }), { requiredWhen: 'kind by_tech_stack; similar needs it or project_type', doc: STACK_DOC }),
  tech_stack: alias('project_tech_stack', STACK_DOC, 'string or list of strings'),
  project_type: string({ max: 200, doc: 'similar: the project type to match' }),
  since_ms: integer({ min: 0, max: MAX_WINDOW_MS, doc: 'recent_feedback: the window in ms (at most 100 years)' }),
  duration: string({ max: 32, pattern: { re: DURATION, says: 'a duration like "90s", "30m", "24h" or "7d"' }, doc: 'recent_feedback: the window (since_ms wins when both are given)' }),
  threshold: number({ min: 0, max: 1, doc: 'high_performance: minimum success rate' }),
  min_success_rate: alias('threshold', 'high_performance: minimum success rate', 'number 0..1'),
  min_count: integer({ min: 1, doc: 'high_performance: minimum executions per prompt' }),
};

/** "24h", "30m", "7d", "90s" (checked by the spec's pattern) in milliseconds; at most MAX_WINDOW_MS (a date before it is not a date). */
function durationMs(d: string): number {
  const m = DURATION.exec(d)!;
  const ms = Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
  if (!(ms <= MAX_WINDOW_MS)) throw badRequest('duration', 'expected a window of at most 100 years');
  return ms;
}

const query = typedOp({
  name: 'query',
  summary: `query the tracking store: kind = ${QUERY_KINDS.join(' | ')}`,
  args: QUERY_ARGS,
  reply: '%{kind, rows: [map]}: the rows of the entry kind the query reads (docs/tracking.md), or per-prompt aggregates for high_performance',
  errors: { unavailable: 'the database is unreachable' },
  examples: [
    { kind: 'high_performance', threshold: 0.8, min_count: 10 },
    { kind: 'prompt_executions', prompt_id: 'p-1', limit: 10 },
    { kind: 'recent_feedback', duration: '24h' },
    { kind: 'similar', project_tech_stack: ['elixir'], project_type: 'web_service' },
    { kind: 'by_id', id: '6f1c1a52-3c53-4c8e-9e43-2f8b2b8f0a11' },
  ],
  refine: (a: ArgsOf<typeof QUERY_ARGS>): { kind: QueryKind; args: QueryArgs } => {
    const args: QueryArgs = { limit: a.limit };
    const stack = a.project_tech_stack === undefined ? undefined : typeof a.project_tech_stack === 'string' ? [a.project_tech_stack] : a.project_tech_stack;
    const need = (field: string, v: string | undefined, what: string): string => {
      if (v === undefined) throw badRequest(field, `is required (${what})`);
      return v;
    };
    switch (a.kind) {
      case 'by_id':
        args.id = need('id', a.id, 'a UUID');
        break;
      case 'similar':
        args.techStack = stack ?? [];
        args.projectType = a.project_type;
        if (args.techStack.length === 0 && args.projectType === undefined) throw badRequest('project_tech_stack', 'expected a tech stack or a project_type to match');
        break;
      case 'by_tech_stack':
        if (stack === undefined || stack.length === 0) throw badRequest('project_tech_stack', 'is required (a list of strings)');
        args.techStack = stack;
        break;
      case 'prompt_executions':
      case 'evolution_history':
        args.promptId = need('prompt_id', a.prompt_id, 'a string');
        break;
      case 'recent_feedback':
        args.sinceMs = a.since_ms ?? (a.duration === undefined ? undefined : durationMs(a.duration));
        args.promptId = a.prompt_id;
        break;
      case 'high_performance':
        args.minSuccessRate = a.threshold;
        args.minCount = a.min_count;
        break;
    }
    return { kind: a.kind, args };
  },
  async handle({ kind, args }, { engine }) {
    const rows = await (await engine.service('store')).query(kind, args);
    return record({ kind, rows });
  },
});

const STATS_ARGS = {
  prompt_id: string({ max: PROMPT_ID_MAX, requiredWhen: 'unless prompt_ids is given', doc: 'one prompt' }),
  prompt_ids: listOf(string({ max: PROMPT_ID_MAX }), { max: 1000, doc: 'several prompts' }),
};

const promptStats = typedOp({
  name: 'prompt_stats',
  summary: 'per-prompt aggregates: count, success rate, mean confidence, latency p50/p95',
  args: STATS_ARGS,
  reply: '%{prompts: [%{prompt_id, count, successes, success_rate: float, mean_confidence: float, p50_ms: float, p95_ms: float}]}',
  errors: { unavailable: 'the database is unreachable' },
  examples: [{ prompt_id: 'p-1' }, { prompt_ids: ['p-1', 'p-2'] }],
  refine: (a: ArgsOf<typeof STATS_ARGS>): { ids: string[] } => {
    if (a.prompt_ids !== undefined) return { ids: a.prompt_ids };
    if (a.prompt_id === undefined) throw badRequest('prompt_id', 'is required (a string), or give prompt_ids');
    return { ids: [a.prompt_id] };
  },
  async handle({ ids }, { engine }) {
    const aggs = await (await engine.service('store')).promptAggregates(ids);
    const empty = { count: 0, successes: 0, success_rate: 0, mean_confidence: 0, p50_ms: 0, p95_ms: 0 };
    return record({ prompts: ids.map((id) => aggregateRecord(id, aggs.get(id) ?? empty)) });
  },
});

export const trackingOps: OpSpec<unknown>[] = [
  trackOp('track_execution', 'execution'),
  trackOp('track_feedback', 'feedback'),
  trackOp('track_evolution', 'evolution'),
  trackOp('track_ab_result', 'ab_result'),
  trackOp('track_context_signature', 'context_signature'),
  query,
  promptStats,
];
