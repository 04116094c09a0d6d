/**
 * Ops of the closed loop: `choose_prompt` (which prompt to use now for an
 * experiment and model; the outcome comes back as an ordinary
 * `track_execution` carrying the reply's `metadata`) and `experiment` (an
 * experiment's variants, outcomes, posteriors and leader; operator actions
 * pin/unpin/reset/stop/resume).
 */
import { atom, isTermObject, float, newMap, record, type Term, type TermObject } from '../codec/terms.js';
import { termToJson } from '../codec/json.js';
import { optBool, optOneOf, optStr, str, stringMap } from '../contract/args.js';
import { badRequest } from '../contract/errors.js';
import { posteriorMean, posteriorOf, successRate, type Experiment } from '../experiments/experiment.js';
import { betaInterval } from '../optimizer/bandit.js';
import type { Vars } from '../templates/renderer.js';
import { defineOp, type OpSpec } from './types.js';

interface ChooseArgs {
  experiment: string;
  prompt?: string;
  templateId?: string;
  variables: Vars;
  context: Record<string, string>;
  model: string;
}

function contextOf(v: Term | undefined): Record<string, string> {
  if (v === undefined || v === null) return {};
  return stringMap(v, 'context');
}

const choosePrompt = defineOp<ChooseArgs>({
  name: 'choose_prompt',
  summary: 'the prompt to use now for an experiment and model (the closed loop); report the outcome with track_execution and the reply metadata',
  args: {
    experiment: { type: 'string (1..200 characters)', required: true, doc: 'the experiment (one per task); created on first use' },
    prompt: { type: 'string (1..100000 characters)', requiredWhen: 'unless template_id is given', doc: 'the base prompt' },
    template_id: { type: 'string', requiredWhen: 'unless prompt is given', doc: 'render this template with variables as the base prompt' },
    variables: { type: 'map', default: {}, doc: 'variables for template_id' },
    context: { type: 'map of string → string', default: {}, doc: 'the caller\'s context; context.model keys the experiment when model is absent' },
    model: { type: 'string (1..200 characters)', default: 'default', doc: 'the model the prompt will run on (else context.model)' },
  },
  reply: '%{prompt, prompt_id, experiment, model, generation, origin: :base | :offline | :llm, exploring: boolean, leader_id, variants, metadata: %{"experiment" => _, "model" => _, "generation" => _}}',
  errors: { not_found: 'template_id names no template', unavailable: 'the database is unreachable' },
  examples: [{ experiment: 'ticket_triage', prompt: 'Classify the ticket.', context: { model: 'gpt-4o-mini' } }],
  validate: (a) => {
    const context = contextOf(a.context);
    const prompt = optStr(a, 'prompt', { min: 1, max: 100_000 });
    const templateId = optStr(a, 'template_id', { min: 1, max: 200 });
    if (prompt === undefined && templateId === undefined) throw badRequest('prompt', 'is required (a string), or give template_id and variables');
    if (prompt !== undefined && templateId !== undefined) throw badRequest('template_id', 'give either prompt or template_id, not both');
    const vars = a.variables;
    if (vars !== undefined && vars !== null && !isTermObject(vars)) throw badRequest('variables', 'expected a map of variables');
    const model = optStr(a, 'model', { min: 1, max: 200 }) ?? context.model ?? 'default';
    if (model.length === 0 || model.length > 200) throw badRequest('context.model', 'expected a string of 1..200 characters');
    return {
      experiment: experimentName(a, 'experiment') ?? required('experiment'),
      prompt,
      templateId,
      variables: vars === undefined || vars === null ? {} : (termToJson(vars as TermObject) as Vars),
      context,
      model,
    };
  },
  async handle(a, { engine }) {
    let base = a.prompt;
    if (base === undefined) {
      const prompts = await engine.service('prompts');
      const t = await prompts.find(a.templateId!);
      base = prompts.cachedRender(t, a.variables, false).prompt;
    }
    const c = await (await engine.service('experiments')).choose({ name: a.experiment, model: a.model, base, context: a.context });
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

/** An experiment's name: a string (binary) of 1..200 characters; an atom is refused (it reads like an instance name on the Elixir side). */
function experimentName(a: TermObject, key: string): string | undefined {
  const v = a[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw badRequest(key, 'expected a string (an experiment name is a binary, not an atom)');
  return str(a, key, { min: 1, max: 200 });
}

const required = (field: string): never => {
  throw badRequest(field, 'is required (a string)');
};

const ACTIONS = ['pin', 'unpin', 'reset', 'stop', 'resume'] as const;

interface ExperimentArgs {
  name?: string;
  model?: string;
  action?: (typeof ACTIONS)[number];
  promptId?: string;
  force: boolean;
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
    outcomes: e.outcomes,
    proposals_made: e.proposalsMade,
    leader: record({ prompt_id: leader.id, origin: atom(leader.origin), success_rate: float(successRate(leader)), count: leader.count }),
    base: record({ prompt_id: e.base.id, success_rate: float(successRate(e.base)), count: e.base.count }),
    improvement: float(leader.count > 0 && e.base.count > 0 ? successRate(leader) - successRate(e.base) : 0),
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
            interval: betaInterval(posteriorOf(v)).map(float),
            posterior_mean: float(posteriorMean(v)),
            p_best: float(pBest.get(v.id) ?? 0),
            predicted: v.predicted === null ? null : float(v.predicted),
          }),
        )
      : e.variants.size,
  });
}

const experiment = defineOp<ExperimentArgs>({
  name: 'experiment',
  summary: 'a closed-loop experiment: variants, outcomes, posteriors, P(best), leader; action pin | unpin | reset | stop | resume. Without a name: every experiment, in brief',
  args: {
    experiment: { type: 'string (1..200 characters)', requiredWhen: 'with an action', doc: 'the experiment; absent: list every experiment in brief' },
    name: { type: 'string', aliasOf: 'experiment', doc: 'the experiment' },
    model: { type: 'string', doc: 'only this model\'s experiment (required with an action when the experiment runs for several models)' },
    action: { type: `one of: ${ACTIONS.join(', ')}`, doc: 'pin (serve prompt_id only), unpin, reset (back to the base), stop (serve the leader, propose nothing), resume' },
    prompt_id: { type: 'string', doc: 'the variant to pin (default: the leader)' },
    force: { type: 'boolean', default: false, doc: 'pin a variant the loop retired or banned anyway' },
  },
  reply: '%{experiments: [%{experiment, model, generation, status, pinned, outcomes, proposals_made, leader: %{prompt_id, origin, success_rate, count}, base: %{prompt_id, success_rate, count}, improvement: float, active, revision, variants: [%{prompt_id, text, origin, state, successes, count, success_rate, interval: [low, high], posterior_mean, p_best, predicted}] | count}]}',
  errors: { not_found: 'no experiment of that name (and model), or prompt_id is not one of its variants', conflict: 'pin of a variant the loop retired or banned, without force: true', unavailable: 'the database is unreachable (actions are written before they apply)' },
  examples: [{}, { experiment: 'ticket_triage' }, { experiment: 'ticket_triage', model: 'gpt-4o-mini', action: 'pin', prompt_id: 'p-1' }],
  validate: (a) => {
    const action = optOneOf(a, 'action', ACTIONS);
    const name = experimentName(a, 'experiment') ?? experimentName(a, 'name');
    if (action !== undefined && name === undefined) throw badRequest('experiment', 'is required with an action');
    const promptId = optStr(a, 'prompt_id', { min: 1, max: 200 });
    if (promptId !== undefined && action === undefined) throw badRequest('prompt_id', 'only goes with an action');
    return { name, model: optStr(a, 'model', { min: 1, max: 200 }), action, promptId, force: optBool(a, 'force') ?? false };
  },
  async handle(a, { engine }) {
    const svc = await engine.service('experiments');
    if (a.name === undefined) return record({ experiments: (await svc.list()).map((e) => describe(e, false)) });
    let exps = await svc.get(a.name, a.model);
    if (a.action !== undefined) {
      if (exps.length > 1 && a.model === undefined) throw badRequest('model', `experiment ${a.name} runs for ${exps.length} models: say which (${exps.map((e) => e.model).join(', ')})`);
      exps = [await svc.act(exps[0]!, a.action, { promptId: a.promptId, force: a.force })];
    }
    return record({ experiments: exps.map((e) => describe(e, true)) });
  },
});

export const experimentOps: OpSpec<unknown>[] = [choosePrompt, experiment] as OpSpec<unknown>[];
