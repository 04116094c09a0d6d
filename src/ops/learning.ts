/** Ops of the learning part: `train` (from the tracking store, in a worker thread) and `score` (batched). */
import fs from 'node:fs';
import path from 'node:path';
import { float, record, type TermObject } from '../codec/terms.js';
import { readModel } from '../learning/modelFile.js';
import { trainFromStore, type HeldOutMetrics } from '../learning/trainer.js';
import { asList, asString, optInt, optNum, stringMap } from '../contract/args.js';
import { defineOp, type OpSpec } from './types.js';
import { badRequest, OpError } from '../contract/errors.js';

const metricsRecord = (m: HeldOutMetrics): TermObject =>
  record({ auc: float(m.auc), log_loss: float(m.log_loss), accuracy: float(m.accuracy), ece: float(m.ece), spearman: float(m.spearman), examples: m.examples });

interface TrainArgs {
  minSamples: number;
  epochs: number;
  holdout: number;
  seed: number;
}

const train = defineOp<TrainArgs>({
  name: 'train',
  summary: 'train a scorer on the tracked history; promoted only when no worse on the same held-out split',
  validate: (a) => ({
    minSamples: optInt(a, 'min_samples', { min: 1, max: 10_000_000 }) ?? 50,
    epochs: optInt(a, 'epochs', { min: 1, max: 200 }) ?? 20,
    holdout: optNum(a, 'holdout', { min: 0.05, max: 0.5 }) ?? 0.2,
    seed: optInt(a, 'seed', { min: 0, max: 2 ** 31 }) ?? 42,
  }),
  async handle(a, { engine, signal, log }) {
    const t0 = Date.now();
    const store = await engine.service('store');
    const scorer = await engine.service('scorer');
    const servingFile = (await store.models.promoted())?.path ?? path.join(engine.config.modelsDir, 'default.onnx');
    const serving = fs.existsSync(servingFile) ? readModel(servingFile) : undefined;
    const out = await trainFromStore({
      store,
      modelsDir: path.join(engine.config.dataDir, 'models'),
      serving,
      minSamples: a.minSamples,
      holdout: a.holdout,
      options: { epochs: a.epochs, seed: a.seed },
      signal,
      log,
    });
    if ('insufficient' in out) throw new OpError('insufficient_data', `need at least ${a.minSamples} executions with prompt text (metadata.prompt), have ${out.insufficient}`);
    await store.models.save({ version: out.meta.version, feature_spec_hash: out.meta.feature_spec_hash, samples: out.samples, metrics: out.meta.metrics, path: out.file, promoted: false });
    const previous = scorer.modelVersion;
    if (out.promoted) {
      await store.models.promote(out.meta.version);
      await scorer.replace(out.onnx, out.meta);
      (await engine.service('cache')).invalidateTag(`model:${previous}`);
    }
    const result = record({
      model_version: out.meta.version,
      samples: out.samples,
      epochs: out.epochs,
      metrics: metricsRecord(out.metrics),
      serving_metrics: out.servingMetrics ? metricsRecord(out.servingMetrics) : null,
      promoted: out.promoted,
      serving_version: out.promoted ? out.meta.version : previous,
      duration_ms: Date.now() - t0,
    });
    engine.emit('model_trained', result);
    return result;
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
