/**
 * The learner: trains a scorer on the tracked history (in a worker thread),
 * measures it beside the serving model on the same held-out split,
 * registers it and promotes it only when no worse, then swaps it into the
 * serving scorer and tells the rest of the engine (`onPromoted`). The
 * `train` op and the closed loop's continuous learning (every `retrainEvery`
 * tracked outcomes, one training at a time, serving never paused) both go
 * through here. With `corpus`, the shipped corpus is replayed beside the
 * history and the new model must also be no worse on the corpus tasks the
 * serving model never saw (trainer.ts); continuous retraining does this by
 * default (PROMPT_ENGINE_RETRAIN_CORPUS).
 */
import type { Logger } from 'pino';
import fs from 'node:fs';
import type { TrackingStore, TrainingHold } from '../store/trackingStore.js';
import { loadCells, MULTIPROMPT_DIR, type Cell } from './corpus.js';
import type { EmbeddingService } from './embeddings.js';
import { servingModel } from './modelSync.js';
import type { Scorer } from './scorer.js';
import type { HeldOutMetrics, UnseenMetrics } from './heldOut.js';
import { trainFromStore } from './trainer.js';

export interface TrainRequest {
  minSamples: number;
  epochs: number;
  holdout: number;
  seed: number;
  /** Replay the shipped corpus beside the history, and guard on its unseen tasks. */
  corpus: boolean;
}

export const DEFAULT_TRAIN_REQUEST: TrainRequest = { minSamples: 50, epochs: 20, holdout: 0.2, seed: 42, corpus: false };

export type TrainResult =
  | { insufficient: number }
  | { busy: true }
  | {
      modelVersion: string;
      samples: number;
      epochs: number;
      metrics: HeldOutMetrics;
      servingMetrics: HeldOutMetrics | undefined;
      /** The new and the serving model on the corpus tasks neither saw (with `corpus`). */
      unseen: UnseenMetrics | undefined;
      servingUnseen: UnseenMetrics | undefined;
      promoted: boolean;
      previousVersion: string;
      servingVersion: string;
      durationMs: number;
    };

export interface LearnerDeps {
  store(): Promise<TrackingStore>;
  scorer(): Promise<Scorer>;
  /** Prompt embeddings (features v3). */
  embeddings?(): Promise<EmbeddingService>;
  /** Replay the corpus in continuous retraining. */
  retrainCorpus?: boolean;
  /** Where the shipped default lives (served when the registry has no promoted model). */
  modelsDir: string;
  /** Where trained models are written. */
  trainedDir: string;
  log: Logger;
  /** After a promotion has been swapped in: drop caches keyed by the old model, tell the owner. */
  onPromoted(previousVersion: string, result: TrainResult): void;
  /** After every finished training, promoted or not. */
  onTrained(result: TrainResult): void;
}

export class Learner {
  private running: Promise<TrainResult> | undefined;
  private outcomesSinceTraining = 0;
  readonly figures = { trainings: 0, promotions: 0, continuous: 0, insufficient: 0, busy: 0, last_error: '' };

  constructor(
    private readonly deps: LearnerDeps,
    /** Retrain after this many tracked outcomes (0 = never by itself). */
    private readonly retrainEvery: number,
  ) {}

  get training(): boolean {
    return this.running !== undefined;
  }

  /** Train now. One training at a time: a second call while one runs shares its result. */
  train(req: TrainRequest, signal: AbortSignal): Promise<TrainResult> {
    this.running ??= this.run(req, signal).finally(() => (this.running = undefined));
    return this.running;
  }

  /** Count tracked outcomes; past `retrainEvery`, train in the background (serving goes on). */
  noteOutcomes(n: number): void {
    if (this.retrainEvery <= 0) return;
    this.outcomesSinceTraining += n;
    if (this.outcomesSinceTraining < this.retrainEvery || this.running !== undefined) return;
    this.outcomesSinceTraining = 0;
    this.figures.continuous++;
    this.train({ ...DEFAULT_TRAIN_REQUEST, minSamples: 10, corpus: this.deps.retrainCorpus ?? false }, new AbortController().signal).catch((err: unknown) => {
      this.figures.last_error = (err as Error).message;
      this.deps.log.warn({ err: (err as Error).message }, 'continuous training failed; serving the current model');
    });
  }

  private corpusCells: Cell[] | undefined;
  /** The shipped corpus, read once (undefined where it is not installed). */
  private corpus(): Cell[] | undefined {
    if (this.corpusCells === undefined && fs.existsSync(MULTIPROMPT_DIR)) this.corpusCells = loadCells();
    return this.corpusCells;
  }

  private async run(req: TrainRequest, signal: AbortSignal): Promise<TrainResult> {
    const store = await this.deps.store();
    // One trainer among the instances sharing the database; another takes over when it dies.
    const r = await store.withTrainingLock((hold) =>
      // Stopped because the lease was lost, the caller hears why (unavailable), not that it cancelled.
      this.trainLocked(store, req, AbortSignal.any([signal, hold.signal]), hold).catch((err: unknown) => Promise.reject(hold.signal.aborted && !signal.aborted ? hold.signal.reason : err)),
    );
    if (!r.locked) {
      this.figures.busy++;
      this.deps.log.info('another instance is training: skipped');
      return { busy: true };
    }
    return r.value;
  }

  private async trainLocked(store: TrackingStore, req: TrainRequest, signal: AbortSignal, hold: TrainingHold): Promise<TrainResult> {
    const t0 = Date.now();
    const scorer = await this.deps.scorer();
    const serving = await servingModel(store, this.deps.modelsDir, this.deps.log);
    const out = await trainFromStore({
      store,
      modelsDir: this.deps.trainedDir,
      serving,
      minSamples: req.minSamples,
      holdout: req.holdout,
      options: { epochs: req.epochs, seed: req.seed },
      signal,
      log: this.deps.log,
      embed: this.deps.embeddings === undefined ? undefined : async (texts) => (await this.deps.embeddings!()).embed(texts, signal),
      corpus: req.corpus ? this.corpus() : undefined,
    });
    if ('insufficient' in out) {
      this.figures.insufficient++;
      return out;
    }
    this.figures.trainings++;
    await store.models.save({
      version: out.meta.version,
      feature_spec_hash: out.meta.feature_spec_hash,
      samples: out.samples,
      metrics: out.meta.metrics,
      onnx: out.onnx,
      meta: out.meta as unknown as Record<string, unknown>,
      promoted: false,
    });
    const previousVersion = scorer.modelVersion;
    if (out.promoted) {
      // Fenced: once the training lease is lost another instance may have trained and promoted meanwhile.
      await store.models.promote(out.meta.version, hold.lease);
      await scorer.replace(out.onnx, out.meta);
      this.figures.promotions++;
    }
    const result: TrainResult = {
      modelVersion: out.meta.version,
      samples: out.samples,
      epochs: out.epochs,
      metrics: out.metrics,
      servingMetrics: out.servingMetrics,
      unseen: out.unseen,
      servingUnseen: out.servingUnseen,
      promoted: out.promoted,
      previousVersion,
      servingVersion: out.promoted ? out.meta.version : previousVersion,
      durationMs: Date.now() - t0,
    };
    this.deps.log.info({ version: result.modelVersion, promoted: result.promoted, samples: result.samples, ms: result.durationMs }, 'scorer trained');
    if (out.promoted) this.deps.onPromoted(previousVersion, result);
    this.deps.onTrained(result);
    return result;
  }
}
