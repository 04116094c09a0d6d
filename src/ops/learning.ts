/** Ops of the learning part: `train` (from the tracking store, in a worker thread) and `score` (batched). */
import { float, record, type TermObject } from '../codec/terms.js';
import { DEFAULT_TRAIN_REQUEST, type TrainRequest } from '../learning/learner.js';
import { trainRecord } from '../learning/resultTerms.js';
import { boolean, integer, listOf, number, string, stringMap } from '../contract/schema.js';
import { typedOp, type OpSpec } from './types.js';
import { badRequest, OpError } from '../contract/errors.js';

const train = typedOp({
  name: 'train',
  summary: 'train a scorer on the tracked history; promoted only when no worse on the same held-out split',
  args: {
    min_samples: integer({ min: 1, max: 10_000_000, default: DEFAULT_TRAIN_REQUEST.minSamples, doc: 'refuse to train on fewer executions with prompt text (docs/tracking.md says which entries count)' }),
    epochs: integer({ min: 1, max: 200, default: DEFAULT_TRAIN_REQUEST.epochs, doc: 'training epochs (early stopping may use fewer)' }),
    holdout: number({ min: 0.05, max: 0.5, default: DEFAULT_TRAIN_REQUEST.holdout, doc: 'share of prompts held out to compare the new model with the serving one' }),
    seed: integer({ min: 0, max: 2 ** 31, default: DEFAULT_TRAIN_REQUEST.seed, doc: 'seed of the split and the initial weights' }),
    corpus: boolean({ default: DEFAULT_TRAIN_REQUEST.corpus, doc: 'also replay the shipped corpus (data/multiprompt, 24 templates per group), and promote only when no worse on its tasks the serving model never saw (minutes instead of seconds)' }),
  },
  reply:
    '%{model_version, samples, epochs, metrics: %{auc, log_loss, accuracy, ece, spearman, examples} (of model_version, the new model), previous_version, serving_metrics: the same of previous_version (the model serving when training began; nil when its features differ), unseen_metrics: %{tasks, groups, spearman, regret} | nil (of model_version on the corpus tasks the serving model never saw; with corpus), serving_unseen_metrics: the same of previous_version, promoted: boolean, serving_version (what serves now: model_version when promoted, else previous_version), duration_ms}',
  errors: {
    insufficient_data: 'fewer than min_samples executions with prompt text (metadata.prompt) are tracked',
    conflict: 'another instance sharing the database is training (its model is announced to every instance when promoted)',
    unavailable: 'the database is unreachable',
  },
  examples: [{}, { min_samples: 200, epochs: 10, holdout: 0.2, seed: 7 }],
  refine: (a): TrainRequest => ({ minSamples: a.min_samples, epochs: a.epochs, holdout: a.holdout, seed: a.seed, corpus: a.corpus }),
  async handle(a, { engine, signal }) {
    const r = await (await engine.service('learner')).train(a, signal);
    if ('busy' in r) throw new OpError('conflict', 'another instance sharing the database is training; its model is announced to every instance when promoted');
    if ('insufficient' in r) throw new OpError('insufficient_data', `need at least ${a.minSamples} executions with prompt text (metadata.prompt), have ${r.insufficient}`);
    return trainRecord(r);
  },
});

interface ScoreArgs {
  prompts: string[];
  context: Record<string, string>;
  single: boolean;
  base: string | undefined;
}

const score = typedOp({
  name: 'score',
  summary: 'P(success) of a prompt (or a batch) in a context, and the model version',
  args: {
    prompt: string({ max: 100_000, requiredWhen: 'unless prompts is given', doc: 'one prompt to score' }),
    prompts: listOf(string({ max: 100_000 }), { max: 10_000, doc: 'a batch to score in one call (replies with scores)' }),
    context: stringMap({ default: {}, doc: 'model, task, language, domain, framework, template: what the scorer conditions on' }),
    base: string({ max: 100_000, doc: "the prompt these are variants of (an experiment's base, the task's own prompt): the scorer compares each with it; absent, each is its own base. A prompt not seen before is embedded first (about 0.1 s each, once; a cancelled or expired request stops its embedding)" }),
  },
  reply: '%{score: float, model_version} with prompt; %{scores: [float], model_version} with prompts',
  examples: [{ prompt: 'Answer yes or no.', context: { model: 'gpt-4o-mini', task: 'sports_understanding' } }, { prompts: ['a', 'b'] }],
  refine: (a): ScoreArgs => {
    if (a.prompts !== undefined) return { prompts: a.prompts, context: a.context, single: false, base: a.base };
    if (a.prompt === undefined) throw badRequest('prompt', 'is required (a string), or give prompts (a list)');
    return { prompts: [a.prompt], context: a.context, single: true, base: a.base };
  },
  async handle({ prompts, context, single, base }, { engine, signal }) {
    const r = await (await engine.service('scorer')).score(prompts.map((prompt) => ({ prompt, context, base })), signal);
    return single ? record({ score: float(r.p[0]!), model_version: r.modelVersion }) : record({ scores: r.p.map((x) => float(x)), model_version: r.modelVersion });
  },
});

export const learningOps: OpSpec<unknown>[] = [train, score];
