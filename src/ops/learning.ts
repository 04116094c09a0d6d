/** Ops of the learning part: `train` (from the tracking store, in a worker thread) and `score` (batched). */
import { float, record, type TermObject } from '../codec/terms.js';
import { DEFAULT_TRAIN_REQUEST, type TrainRequest } from '../learning/learner.js';
import { trainRecord } from '../learning/resultTerms.js';
import { asList, asString, optInt, optNum, stringMap } from '../contract/args.js';
import { defineOp, type OpSpec } from './types.js';
import { badRequest, OpError } from '../contract/errors.js';

const train = defineOp<TrainRequest>({
  name: 'train',
  summary: 'train a scorer on the tracked history; promoted only when no worse on the same held-out split',
  validate: (a) => ({
    minSamples: optInt(a, 'min_samples', { min: 1, max: 10_000_000 }) ?? DEFAULT_TRAIN_REQUEST.minSamples,
    epochs: optInt(a, 'epochs', { min: 1, max: 200 }) ?? DEFAULT_TRAIN_REQUEST.epochs,
    holdout: optNum(a, 'holdout', { min: 0.05, max: 0.5 }) ?? DEFAULT_TRAIN_REQUEST.holdout,
    seed: optInt(a, 'seed', { min: 0, max: 2 ** 31 }) ?? DEFAULT_TRAIN_REQUEST.seed,
  }),
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
}

const score = defineOp<ScoreArgs>({
  name: 'score',
  summary: 'P(success) of a prompt (or a batch) in a context, and the model version',
  validate: (a) => {
    const context = a.context === undefined || a.context === null ? {} : stringMap(a.context, 'context');
    if (a.prompts !== undefined) {
      const prompts = asList(a.prompts, 'prompts', { max: 10_000 }).map((p, i) => asString(p, `prompts[${i}]`, { max: 100_000 }));
      return { prompts, context, single: false };
    }
    if (a.prompt === undefined) throw badRequest('prompt', 'is required (a string), or give prompts (a list)');
    return { prompts: [asString(a.prompt, 'prompt', { max: 100_000 })], context, single: true };
  },
  async handle({ prompts, context, single }, { engine }) {
    const r = await (await engine.service('scorer')).score(prompts.map((prompt) => ({ prompt, context })));
    return single ? record({ score: float(r.p[0]!), model_version: r.modelVersion }) : record({ scores: r.p.map((x) => float(x)), model_version: r.modelVersion });
  },
});

export const learningOps: OpSpec<unknown>[] = [train, score] as OpSpec<unknown>[];
