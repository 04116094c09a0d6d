/**
 * The learner: trains a scorer on the tracked history (in a worker thread),
 * measures it beside the serving model on the same held-out split,
 * registers it and promotes it only when no worse, then swaps it into the
 * serving scorer and tells the rest of the engine (`onPromoted`). The
 * `train` op and the closed loop's continuous learning (every `retrainEvery`
 * tracked outcomes, one training at a time, serving never paused) both go
 * through here.
 */
import type { Logger } from 'pino';
import type { TrackingStore } from '../store/trackingStore.js';
import { servingModel } from './modelSync.js';
import type { Scorer } from './scorer.js';
import { trainFromStore, type HeldOutMetrics } from './trainer.js';

export interface TrainRequest {
  minSamples: number;
  epochs: number;
  holdout: number;
  seed: number;
}

export const DEFAULT_TRAIN_REQUEST: TrainRequest = { minSamples: 50, epochs: 20, holdout: 0.2, seed: 42 };

export type TrainResult =
  | { insufficient: number }
  | { busy: true }
  | {
      modelVersion: string;
      samples: number;
      epochs: number;
      metrics: HeldOutMetrics;
      servingMetrics: HeldOutMetrics | undefined;
      promoted: boolean;
      previousVersion: string;
      servingVersion: string;
      durationMs: number;
    };

export interface LearnerDeps {
  store(): Promise<TrackingStore>;
  scorer(): Promise<Scorer>;
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
    this.train({ ...DEFAULT_TRAIN_REQUEST, minSamples: 10 }, new AbortController().signal).catch((err: unknown) => {
      this.figures.last_error = (err as Error).message;
      this.deps.log.warn({ err: (err as Error).message }, 'continuous training failed; serving the current model');
    });
  }

  private async run(req: TrainRequest, signal: AbortSignal): Promise<TrainResult> {
    const store = await this.deps.store();
    // One trainer among the instances sharing the database; another takes over when it dies.
    const r = await store.withTrainingLock(() => this.trainLocked(store, req, signal));
    if (!r.locked) {
      this.figures.busy++;
      this.deps.log.info('another instance is training: skipped');
      return { busy: true };
    }
    return r.value;
  }

  private async trainLocked(store: TrackingStore, req: TrainRequest, signal: AbortSignal): Promise<TrainResult> {
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
      await store.models.promote(out.meta.version);
      await scorer.replace(out.onnx, out.meta);
      this.figures.promotions++;
    }
    const result: TrainResult = {
      modelVersion: out.meta.version,
      samples: out.samples,
      epochs: out.epochs,
      metrics: out.metrics,
      servingMetrics: out.servingMetrics,
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
