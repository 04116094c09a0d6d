/**
 * Ops of the closed loop: `choose_prompt` (which prompt to use now for an
 * experiment and model; the outcome comes back as an ordinary
 * `track_execution` carrying the reply's `metadata`, or a rating naming the
 * choice) and `experiment` (an experiment's objective, variants, outcomes,
 * posteriors and leader; operator actions pin/unpin/reset/stop/resume and
 * a new objective).
 */
import { atom, float, newMap, record, type Term, type TermObject } from '../codec/terms.js';
import { termToJson } from '../codec/json.js';
import { alias, boolean, integer, number, oneOf, record as recordArg, string, stringMap, variables, type ArgsOf } from '../contract/schema.js';
import { badRequest } from '../contract/errors.js';
import { successRate, type Experiment, type Variant } from '../experiments/experiment.js';
import { costPerCall, DEFAULT_OBJECTIVE, meanScore, type Objective } from '../experiments/objective.js';
import { MAX_MODELS_PER_REPLY } from '../experiments/service.js';
import { OBJECTIVE_KINDS, type HistoryRow } from '../store/experimentRecords.js';
import { LOOP_NAME_MAX } from '../store/entries.js';
import type { Vars } from '../templates/renderer.js';
import { typedOp, type OpSpec } from './types.js';

/** Costs and weights: non-negative and finite (a 1e9 cap keeps a typo from swamping every score). */
const COST = { min: 0, max: 1e9 } as const;

/** An objective's keys, declared once: both ops' nested schema, its reader and its docs. */
const OBJECTIVE_ARGS = {
  kind: oneOf(OBJECTIVE_KINDS, { default: DEFAULT_OBJECTIVE.kind, doc: 'success: the share of successful calls; score: the mean graded score (0..1); reward: score − cost_weight × cost per call' }),
  cost_weight: number({ ...COST, default: 0, doc: 'reward: what one unit of cost per call takes off the score' }),
  input_token_cost: number({ ...COST, default: 0, doc: 'cost of one input token, added to the reported cost' }),
  output_token_cost: number({ ...COST, default: 0, doc: 'cost of one output token, added to the reported cost' }),
  max_latency_ms_p90: number({ ...COST, doc: 'constraint (above 0): a variant whose p90 latency is above it with 95% confidence is banned' }),
  max_cost_per_call: number({ ...COST, doc: 'constraint: a variant whose mean cost per call is above it with 95% confidence is banned' }),
};

function toObjective(o: ArgsOf<typeof OBJECTIVE_ARGS> | undefined): Objective | undefined {
  if (o === undefined) return undefined;
  if (o.max_latency_ms_p90 === 0) throw badRequest('objective.max_latency_ms_p90', 'expected a number above 0');
  return {
    kind: o.kind,
    cost_weight: o.cost_weight,
    input_token_cost: o.input_token_cost,
    output_token_cost: o.output_token_cost,
    max_latency_ms_p90: o.max_latency_ms_p90 ?? null,
    max_cost_per_call: o.max_cost_per_call ?? null,
  };
}

/** An experiment's name: a string (binary) of 1..LOOP_NAME_MAX characters; an atom is refused (it reads like an instance name on the Elixir side). */
function experimentName<O extends { required?: boolean; requiredWhen?: string; doc: string }>(o: O): ReturnType<typeof string<O & { min: 1; max: typeof LOOP_NAME_MAX }>> {
  const spec = string({ ...o, min: 1 as const, max: LOOP_NAME_MAX });
  const read = spec.read!;
  return {
    ...spec,
    read: (v: Term, f: string): string => {
      if (typeof v !== 'string') throw badRequest(f, 'expected a string (an experiment name is a binary, not an atom)');
      return read(v, f);
    },
  } as ReturnType<typeof string<O & { min: 1; max: typeof LOOP_NAME_MAX }>>;
}

const MODEL = { min: 1, max: LOOP_NAME_MAX } as const;

/** An objective as a reply carries it. */
const objectiveTerm = (o: Objective): TermObject =>
  record({ kind: atom(o.kind), cost_weight: float(o.cost_weight), input_token_cost: float(o.input_token_cost), output_token_cost: float(o.output_token_cost), max_latency_ms_p90: o.max_latency_ms_p90 === null ? null : float(o.max_latency_ms_p90), max_cost_per_call: o.max_cost_per_call === null ? null : float(o.max_cost_per_call) });

const CHOOSE_ARGS = {
  experiment: experimentName({ required: true, doc: 'the experiment (one per task); created on first use' }),
  prompt: string({ min: 1, max: 100_000, requiredWhen: 'unless template_id is given', doc: 'the base prompt' }),
  template_id: string({ min: 1, max: 200, requiredWhen: 'unless prompt is given', doc: 'render this template with variables as the base prompt' }),
  variables: variables({ default: {}, doc: 'variables for template_id' }),
  context: stringMap({ default: {}, doc: "the caller's context; context.model keys the experiment when model is absent" }),
  model: string({ ...MODEL, doc: 'the model the prompt will run on (else context.model, else "default")' }),
  objective: recordArg(OBJECTIVE_ARGS, { doc: "what a new experiment optimizes, with its constraints (default kind success; set on first use, changed by the experiment op's objective action)" }),
};

const choosePrompt = typedOp({
  name: 'choose_prompt',
  summary: 'the prompt to use now for an experiment and model (the closed loop); report the outcome with track_execution and the reply metadata',
  args: CHOOSE_ARGS,
  reply: '%{prompt, prompt_id, experiment, model, generation, origin: :base | :offline | :llm, exploring: boolean, leader_id, variants, metadata: %{"experiment" => _, "model" => _, "generation" => _}}',
  errors: { not_found: 'template_id names no template', unavailable: 'the database is unreachable' },
  examples: [{ experiment: 'ticket_triage', prompt: 'Classify the ticket.', context: { model: 'gpt-4o-mini' } }],
  refine: (a: ArgsOf<typeof CHOOSE_ARGS>) => {
    if (a.prompt === undefined && a.template_id === undefined) throw badRequest('prompt', 'is required (a string), or give template_id and variables');
    if (a.prompt !== undefined && a.template_id !== undefined) throw badRequest('template_id', 'give either prompt or template_id, not both');
    const model = a.model ?? a.context.model ?? 'default';
    if (model.length === 0 || model.length > MODEL.max) throw badRequest('context.model', `expected a string of ${MODEL.min}..${MODEL.max} characters`);
    return {
      experiment: a.experiment,
      prompt: a.prompt,
      templateId: a.template_id,
      variables: termToJson(a.variables) as Vars,
      context: a.context,
      model,
      objective: toObjective(a.objective),
    };
  },
  async handle(a, { engine }) {
    let base = a.prompt;
    if (base === undefined) {
      const prompts = await engine.service('prompts');
      const t = await prompts.find(a.templateId!);
      base = prompts.cachedRender(t, a.variables, false).prompt;
    }
    const c = await (await engine.service('experiments')).choose({ name: a.experiment, model: a.model, base, context: a.context, objective: a.objective });
    return record({
      prompt: c.prompt,
      prompt_id: c.promptId,
      experiment: c.experiment,
      model: c.model,
      generation: c.generation,
      origin: atom(c.origin),
      exploring: c.exploring,
      leader_id: c.leaderId,
      variants: c.variants,
      // Put this in the execution's metadata (the Elixir client's report_outcome does).
      metadata: loopMetadata(c.experiment, c.model, c.generation),
    });
  },
});

/** Binary keys: this map goes back as the execution's metadata (a user map). */
function loopMetadata(experiment: string, model: string, generation: number): TermObject {
  const m = newMap();
  m.experiment = experiment;
  m.model = model;
  m.generation = String(generation);
  return m;
}

const ACTIONS = ['pin', 'unpin', 'reset', 'stop', 'resume', 'objective'] as const;


/**
 * An experiment's history as the reply carries it: each snapshot of its
 * counts as a bucket (cumulative outcomes and successes at its end, and each
 * variant's servings within it), and its decisions as events.
 */
function historyTerms(rows: readonly HistoryRow[]): { history: TermObject[]; events: TermObject[] } {
  const history: TermObject[] = [];
  const events: TermObject[] = [];
  let previous: Record<string, number> = {};
  for (const r of rows) {
    if (r.kind !== 'snapshot') {
      events.push(record({ kind: atom(r.kind), prompt_id: r.prompt_id, outcomes: r.outcomes, at: r.at }));
      continue;
    }
    const served = newMap();
    for (const [id, n] of Object.entries(r.variants ?? {})) if (n - (previous[id] ?? 0) > 0) served[id] = n - (previous[id] ?? 0);
    previous = r.variants ?? {};
    history.push(record({ outcomes: r.outcomes, successes: r.successes, variants: served, at: r.at }));
  }
  return { history, events };
}

/** A variant judged by the experiment's objective: its value as measured and as estimated (mean, 95% interval), and each measured component. */
function judged(e: Experiment, v: Variant): Record<string, Term> {
  const est = e.estimate(v);
  const h = 1.96 * Math.sqrt(est.variance);
  return {
    value: float(e.value(v)),
    posterior_mean: float(est.mean),
    interval: [float(Math.max(e.objective.kind === 'reward' ? -Infinity : 0, est.mean - h)), float(e.objective.kind === 'reward' ? est.mean + h : Math.min(1, est.mean + h))],
    score_mean: float(meanScore(v)),
    cost_per_call: float(costPerCall(e.objective, v)),
    latency_mean_ms: float(v.count === 0 ? 0 : v.latency_sum / v.count),
    over_latency_share: float(v.count === 0 ? 0 : v.over_latency / v.count),
  };
}

function describe(e: Experiment, withVariants: boolean): TermObject {
  const pBest = withVariants ? e.pBest() : new Map<string, number>();
  const leader = e.leader;
  return record({
    experiment: e.name,
    model: e.model,
    generation: e.generation,
    status: atom(e.status),
    pinned: e.pinned ?? null,
    objective: objectiveTerm(e.objective),
    outcomes: e.outcomes,
    proposals_made: e.proposalsMade,
    leader: record({ prompt_id: leader.id, origin: atom(leader.origin), success_rate: float(successRate(leader)), value: float(e.value(leader)), count: leader.count }),
    base: record({ prompt_id: e.base.id, success_rate: float(successRate(e.base)), value: float(e.value(e.base)), count: e.base.count }),
    // The objective's value of the leader minus the base's, as measured.
    improvement: float(leader.count > 0 && e.base.count > 0 ? e.value(leader) - e.value(e.base) : 0),
    active: e.active.length,
    revision: e.revision,
    variants: withVariants
      ? [...e.variants.values()].map((v) =>
          record({
            prompt_id: v.id,
            text: v.text,
            origin: atom(v.origin),
            state: atom(v.state),
            successes: v.successes,
            count: v.count,
            success_rate: float(successRate(v)),
            ...judged(e, v),
            p_best: float(pBest.get(v.id) ?? 0),
            predicted: v.predicted === null ? null : float(v.predicted),
          }),
        )
      : e.variants.size,
  });
}

const EXPERIMENT_ARGS = {
  experiment: experimentName({ requiredWhen: 'with an action', doc: 'the experiment; absent: list every experiment in brief' }),
  name: alias('experiment', 'the experiment', 'string'),
  model: string({ ...MODEL, doc: "only this model's experiment (required with an action when the experiment runs for several models)" }),
  action: oneOf(ACTIONS, { doc: 'pin (serve prompt_id only), unpin, reset (back to the base), stop (serve the leader, propose nothing), resume, objective (a new generation judged by the objective given)' }),
  objective: recordArg(OBJECTIVE_ARGS, { requiredWhen: 'with action objective', doc: 'the new objective' }),
  prompt_id: string({ min: 1, max: 200, doc: 'the variant to pin (default: the leader)' }),
  force: boolean({ default: false, doc: 'pin a variant the loop retired or banned anyway' }),
  generation: integer({
    min: 1,
    max: 999_999_999,
    doc: "with an action: apply it only while the experiment is at this generation (the one a reply showed), else conflict. A reset or a new objective retried after unavailable then never starts two generations",
  }),
  history: boolean({ default: false, doc: "add each experiment's history: snapshots of its counts (history) and its decisions (events)" }),
};

const experiment = typedOp({
  name: 'experiment',
  summary: 'a closed-loop experiment: variants, outcomes, posteriors, P(best), leader; action pin | unpin | reset | stop | resume | objective. Without a name: every experiment, in brief',
  args: EXPERIMENT_ARGS,
  reply: '%{experiments: [%{experiment, model, generation, status, pinned, objective, outcomes, proposals_made, leader: %{prompt_id, origin, success_rate, value, count}, base: %{prompt_id, success_rate, value, count}, improvement: float, active, revision, variants: [%{prompt_id, text, origin, state, successes, count, success_rate, value, posterior_mean, interval: [low, high], score_mean, cost_per_call, latency_mean_ms, over_latency_share, p_best, predicted}] | count, history: [%{outcomes, successes, variants: %{prompt_id => servings in the bucket}, at}], events: [%{kind: :leader | :retired | :banned | :admitted, prompt_id, outcomes, at}]}]} (history and events with history: true)',
  errors: {
    not_found: 'no experiment of that name (and model), or prompt_id is not one of its variants',
    bad_request: `an experiment that runs for more than ${MAX_MODELS_PER_REPLY} models, asked without model:`,
    conflict: 'pin of a variant the loop retired or banned, without force: true; an action whose generation: the experiment is no longer at',
    unavailable: 'the database is unreachable or did not answer in time (actions are written before they apply; one cut at its commit may have been applied: ask again without the action, or send it again with generation:)',
  },
  examples: [{}, { experiment: 'ticket_triage' }, { experiment: 'ticket_triage', model: 'gpt-4o-mini', action: 'pin', prompt_id: 'p-1' }, { experiment: 'ticket_triage', action: 'reset', generation: 3 }, { experiment: 'ticket_triage', action: 'objective', objective: { kind: 'reward', cost_weight: 2, max_latency_ms_p90: 2000 } }],
  refine: (a: ArgsOf<typeof EXPERIMENT_ARGS>) => {
    if (a.action !== undefined && a.experiment === undefined) throw badRequest('experiment', 'is required with an action');
    if (a.prompt_id !== undefined && a.action === undefined) throw badRequest('prompt_id', 'only goes with an action');
    if (a.generation !== undefined && a.action === undefined) throw badRequest('generation', 'only goes with an action');
    const objective = toObjective(a.objective);
    if ((objective === undefined) !== (a.action !== 'objective')) throw badRequest('objective', 'goes with action objective, and only with it');
    return { name: a.experiment, model: a.model, action: a.action, promptId: a.prompt_id, force: a.force, generation: a.generation, history: a.history, objective };
  },
  async handle(a, { engine }) {
    const svc = await engine.service('experiments');
    if (a.name === undefined) return record({ experiments: (await svc.list()).map((e) => describe(e, false)) });
    let exps = await svc.get(a.name, a.model);
    if (a.action !== undefined) {
      if (exps.length > 1 && a.model === undefined) throw badRequest('model', `experiment ${a.name} runs for ${exps.length} models: say which (${exps.map((e) => e.model).join(', ')})`);
      exps = [await svc.act(exps[0]!, a.action, { promptId: a.promptId, force: a.force, objective: a.objective, generation: a.generation })];
    }
    if (!a.history) return record({ experiments: exps.map((e) => describe(e, true)) });
    const withHistory = await Promise.all(exps.map(async (e) => ({ e, h: historyTerms(await svc.history(e)) })));
    return record({ experiments: withHistory.map(({ e, h }) => record({ ...describe(e, true), history: h.history, events: h.events })) });
  },
});

export const experimentOps: OpSpec<unknown>[] = [choosePrompt, experiment];
