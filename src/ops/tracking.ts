/**
 * Ops of the tracking store: `track_*` (answered with the id once the row is
 * durable), `query` (seven kinds), `prompt_stats` (per-prompt aggregates).
 */
import { record, type TermObject } from '../codec/terms.js';
import { ENTRIES, ENTRY_SCHEMAS, parseEntry, type EntryKind, type EntryRow } from '../store/entries.js';
import { QUERY_KINDS, type QueryArgs, type QueryKind } from '../store/queries.js';
import { aggregateRecord } from '../store/rowTerms.js';
import { asList, asString, oneOf, optInt, optNum, optStr, str } from '../contract/args.js';
import type { Json } from '../codec/json.js';
import { defineOp, type OpSpec } from './types.js';
import { badRequest } from '../contract/errors.js';
import { reportsOutcome } from '../experiments/service.js';

function trackOp(name: string, kind: EntryKind): OpSpec<unknown> {
  return defineOp<EntryRow>({
    name,
    summary: `record a ${ENTRIES[kind].title} (docs/tracking.md); answered with its id once the row is durable`,
    durableKind: kind,
    args: ENTRY_SCHEMAS[kind],
    reply: '%{id: binary} once the row is committed, or fsync\'d to the journal while the database is unreachable',
    errors: { unavailable: 'the tracking store could not open (e.g. a PGlite data directory held by another process)' },
    examples: [TRACK_EXAMPLES[kind]],
    validate: (a) => parseEntry(kind, a),
    async handle(row, { engine }) {
      // A closed-loop outcome goes through the experiments, which count it with its row.
      if (reportsOutcome(row)) await (await engine.service('experiments')).track(row);
      else await (await engine.service('store')).write(row);
      return record({ id: row.id });
    },
  }) as OpSpec<unknown>;
}

/** "24h", "30m", "7d", "90s" or milliseconds. */
function duration(a: TermObject): number | undefined {
  const ms = optInt(a, 'since_ms', { min: 0 });
  if (ms !== undefined) return ms;
  const d = optStr(a, 'duration', { max: 32 });
  if (d === undefined) return undefined;
  const m = /^(\d+)\s*(ms|s|m|h|d)$/.exec(d.trim());
  if (m === null) throw badRequest('duration', 'expected a duration like "90s", "30m", "24h" or "7d"');
  return Number(m[1]) * { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 'ms' | 's' | 'm' | 'h' | 'd'];
}

function techStack(a: TermObject): string[] | undefined {
  const v = a.project_tech_stack ?? a.tech_stack;
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') return [v];
  return asList(v, 'project_tech_stack', { max: 100 }).map((x, i) => asString(x, `project_tech_stack[${i}]`, { max: 200 }));
}

const TRACK_EXAMPLES: Record<EntryKind, Json> = {
  execution: { prompt_id: 'p-1', success: true, execution_time_ms: 420, confidence_score: 0.9, metadata: { prompt: 'Classify the ticket.', model: 'gpt-4o-mini', task: 'triage' } },
  feedback: { prompt_id: 'p-1', feedback_type: 'quality', rating: 4, comment: 'clear' },
  evolution: { original_prompt_id: 'p-1', evolved_prompt_id: 'p-2', evolution_type: 'refinement', performance_improvement: 0.05 },
  ab_result: { test_id: 't-1', variant_a_prompt_id: 'p-1', variant_b_prompt_id: 'p-2', winner: 'b', confidence_level: 0.95, sample_size: 400, test_duration: 86400000, metrics: { success_rate_b: 0.81 } },
  context_signature: { signature_hash: 'sig-1', project_tech_stack: ['elixir', 'phoenix'], project_type: 'web_service', complexity_level: 'medium' },
};

const STACK_DOC = 'technologies to match (a string or a list of strings)';

const query = defineOp<{ kind: QueryKind; args: QueryArgs }>({
  name: 'query',
  summary: `query the tracking store: kind = ${QUERY_KINDS.join(' | ')}`,
  args: {
    kind: { type: `one of: ${QUERY_KINDS.join(', ')}`, required: true, doc: 'which query' },
    limit: { type: 'integer 1..10000', default: 100, doc: 'at most this many rows' },
    id: { type: 'string (a UUID)', requiredWhen: 'kind by_id', doc: 'the entry\'s id' },
    prompt_id: { type: 'string', requiredWhen: 'kind prompt_executions, evolution_history', doc: 'the prompt (recent_feedback: optional filter)' },
    project_tech_stack: { type: 'string or list of strings', requiredWhen: 'kind by_tech_stack; similar needs it or project_type', doc: STACK_DOC },
    tech_stack: { type: 'string or list of strings', aliasOf: 'project_tech_stack', doc: STACK_DOC },
    project_type: { type: 'string', doc: 'similar: the project type to match' },
    since_ms: { type: 'integer ≥ 0', doc: 'recent_feedback: the window in ms' },
    duration: { type: 'string like "90s", "30m", "24h", "7d"', doc: 'recent_feedback: the window (since_ms wins when both are given)' },
    threshold: { type: 'number 0..1', doc: 'high_performance: minimum success rate' },
    min_success_rate: { type: 'number 0..1', aliasOf: 'threshold', doc: 'high_performance: minimum success rate' },
    min_count: { type: 'integer ≥ 1', doc: 'high_performance: minimum executions per prompt' },
  },
  reply: '%{kind, rows: [map]}: the rows of the entry kind the query reads (docs/tracking.md), or per-prompt aggregates for high_performance',
  errors: { unavailable: 'the database is unreachable' },
  examples: [
    { kind: 'high_performance', threshold: 0.8, min_count: 10 },
    { kind: 'prompt_executions', prompt_id: 'p-1', limit: 10 },
    { kind: 'recent_feedback', duration: '24h' },
    { kind: 'similar', project_tech_stack: ['elixir'], project_type: 'web_service' },
    { kind: 'by_id', id: '6f1c1a52-3c53-4c8e-9e43-2f8b2b8f0a11' },
  ],
  validate: (a) => {
    const kind = oneOf(a, 'kind', QUERY_KINDS);
    const args: QueryArgs = { limit: optInt(a, 'limit', { min: 1, max: 10_000 }) ?? 100 };
    switch (kind) {
      case 'by_id': {
        args.id = str(a, 'id', { max: 36 });
        if (!/^[0-9a-f-]{36}$/i.test(args.id)) throw badRequest('id', 'expected a UUID');
        break;
      }
      case 'similar':
        args.techStack = techStack(a) ?? [];
        args.projectType = optStr(a, 'project_type', { max: 200 });
        if (args.techStack.length === 0 && args.projectType === undefined) throw badRequest('project_tech_stack', 'expected a tech stack or a project_type to match');
        break;
      case 'by_tech_stack':
        args.techStack = techStack(a);
        if (args.techStack === undefined || args.techStack.length === 0) throw badRequest('project_tech_stack', 'is required (a list of strings)');
        break;
      case 'prompt_executions':
      case 'evolution_history':
        args.promptId = str(a, 'prompt_id', { max: 512 });
        break;
      case 'recent_feedback':
        args.sinceMs = duration(a);
        args.promptId = optStr(a, 'prompt_id', { max: 512 });
        break;
      case 'high_performance':
        args.minSuccessRate = optNum(a, 'threshold', { min: 0, max: 1 }) ?? optNum(a, 'min_success_rate', { min: 0, max: 1 });
        args.minCount = optInt(a, 'min_count', { min: 1 });
        break;
    }
    return { kind, args };
  },
  async handle({ kind, args }, { engine }) {
    const rows = await (await engine.service('store')).query(kind, args);
    return record({ kind, rows });
  },
});

const promptStats = defineOp<{ ids: string[] }>({
  name: 'prompt_stats',
  summary: 'per-prompt aggregates: count, success rate, mean confidence, latency p50/p95',
  args: {
    prompt_id: { type: 'string', requiredWhen: 'unless prompt_ids is given', doc: 'one prompt' },
    prompt_ids: { type: 'list of strings (at most 1000)', doc: 'several prompts' },
  },
  reply: '%{prompts: [%{prompt_id, count, successes, success_rate: float, mean_confidence: float, p50_ms: float, p95_ms: float}]}',
  errors: { unavailable: 'the database is unreachable' },
  examples: [{ prompt_id: 'p-1' }, { prompt_ids: ['p-1', 'p-2'] }],
  validate: (a) => {
    const ids = a.prompt_ids !== undefined ? asList(a.prompt_ids, 'prompt_ids', { max: 1000 }).map((x, i) => asString(x, `prompt_ids[${i}]`, { max: 512 })) : [str(a, 'prompt_id', { max: 512 })];
    return { ids };
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
  query as OpSpec<unknown>,
  promptStats as OpSpec<unknown>,
];
