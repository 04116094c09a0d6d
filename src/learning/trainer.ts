/**
 * Training from the tracking store: executions (and feedback on prompts
 * whose text is known) become weighted examples, a worker thread trains the
 * ranker (ranker.ts: pairwise within each (task, model) group, calibrated to
 * P(success)) on the rows not held out, the new model is measured on the
 * held-out split beside the serving model, stored (file + registry row), and
 * promoted only when it is no worse on that same split.
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { REPO_ROOT } from '../config.js';
import type { ExecutionRow, FeedbackRow, TrackingStore } from '../store/trackingStore.js';
import { FEATURE_SPEC, featurize, specHash } from './features.js';
import { auc, ece, logLoss, spearman, type Weighted } from './metrics.js';
import { predictAll, type MlpWeights } from './mlp.js';
import type { RankerOptions } from './ranker.js';
import { exportOnnx, readOnnxWeights } from './onnx.js';
import { writeModel, type ModelMeta } from './modelFile.js';
import type { TrainRow } from './trainWorker.js';

const CONTEXT_KEYS = ['model', 'task', 'language', 'domain', 'framework', 'template'] as const;

/** The text of a closed-loop variant (executions of experiments carry only its prompt id). */
export interface VariantText {
  text: string;
  experiment: string;
  model: string;
}

/** Executions → training rows. An aggregated cell (metadata n, successes) is one row of weight n. */
export function rowsFromHistory(executions: ExecutionRow[], feedback: FeedbackRow[], holdoutFraction: number, variantTexts: ReadonlyMap<string, VariantText> = new Map()): TrainRow[] {
  const rows: TrainRow[] = [];
  const textOf = new Map<string, { prompt: string; context: Record<string, string> }>();
  const holdout = (promptId: string): boolean => parseInt(createHash('sha256').update(`holdout:${promptId}`).digest('hex').slice(0, 8), 16) / 0xffffffff < holdoutFraction;
  // Closed-loop outcomes carry no text: one row per (variant, model), weighted by its outcomes.
  const loop = new Map<string, { prompt: string; context: Record<string, string>; k: number; n: number; id: string }>();
  for (const e of executions) {
    const experiment = e.metadata.experiment;
    const known = experiment !== undefined && e.metadata.prompt === undefined ? variantTexts.get(e.prompt_id) : undefined;
    if (known !== undefined && experiment !== undefined) {
      const model = e.metadata.model ?? known.model;
      const key = `${e.prompt_id}\u0000${model}`;
      const agg = loop.get(key) ?? { prompt: known.text, context: { model, task: experiment }, k: 0, n: 0, id: e.prompt_id };
      loop.set(key, agg);
      agg.n++;
      if (e.success) agg.k++;
      continue;
    }
    const prompt = e.metadata.prompt;
    if (prompt === undefined || prompt === '') continue;
    const context: Record<string, string> = {};
    for (const k of CONTEXT_KEYS) if (e.metadata[k] !== undefined) context[k] = e.metadata[k]!;
    textOf.set(e.prompt_id, { prompt, context });
    const n = Number(e.metadata.n);
    const k = Number(e.metadata.successes);
    const aggregated = Number.isFinite(n) && n > 0 && Number.isFinite(k) && k >= 0 && k <= n;
    rows.push({ prompt, context, y: aggregated ? k / n : e.success ? 1 : 0, w: aggregated ? n : 1, holdout: holdout(e.prompt_id) });
  }
  for (const a of loop.values()) {
    textOf.set(a.id, { prompt: a.prompt, context: a.context });
    rows.push({ prompt: a.prompt, context: a.context, y: a.k / a.n, w: a.n, holdout: holdout(a.id) });
  }
  for (const f of feedback) {
    const known = textOf.get(f.prompt_id);
    if (known === undefined) continue;
    rows.push({ prompt: known.prompt, context: { ...known.context, ...pick(f.context) }, y: Math.min(1, Math.max(0, f.rating / 5)), w: 1, holdout: holdout(f.prompt_id) });
  }
  return rows;
}

function pick(ctx: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of CONTEXT_KEYS) if (ctx[k] !== undefined) out[k] = ctx[k]!;
  return out;
}

export function workerFile(): string {
  // The worker runs compiled JS (Node 20 cannot run .ts in a worker): dist/ is built before tests and use.
  return path.join(REPO_ROOT, 'dist', 'src', 'learning', 'trainWorker.js');
}

export function trainInWorker(rows: TrainRow[], options: TrainRequestOptions, signal: AbortSignal, log: Logger): Promise<{ weights: MlpWeights; epochs: number }> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(workerFile(), { workerData: { rows, options } });
    const onAbort = (): void => {
      void worker.terminate();
      reject(Object.assign(new Error('training was cancelled'), { name: 'AbortError' }));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    worker.on('message', (m: { type: string; epoch?: number; trainLoss?: number; valLoss?: number; weights?: MlpWeights; epochs?: number }) => {
      if (m.type === 'epoch') {
        // Progress is a log record at info (never a raw stderr line: the Elixir client's log relay would take it for a warning).
        log.info({ epoch: m.epoch, trainLoss: m.trainLoss, valLoss: m.valLoss }, 'training epoch');
      } else if (m.type === 'done') {
        signal.removeEventListener('abort', onAbort);
        resolve({ weights: m.weights!, epochs: m.epochs! });
        void worker.terminate();
      }
    });
    worker.on('error', (err) => {
      signal.removeEventListener('abort', onAbort);
      reject(err);
    });
  });
}

export type TrainRequestOptions = Omit<RankerOptions, 'onEpoch' | 'shouldStop'>;

export interface HeldOutMetrics {
  auc: number;
  log_loss: number;
  accuracy: number;
  ece: number;
  spearman: number;
  examples: number;
}

/** Metrics of a model on the held-out rows; Spearman is averaged over (task, model) groups that have 3+ prompts. */
export function heldOutMetrics(w: MlpWeights, rows: TrainRow[]): HeldOutMetrics {
  const held = rows.filter((r) => r.holdout);
  const p = predictAll(w, held.map((r) => featurize(r.prompt, r.context)));
  const ws: Weighted[] = held.map((r, i) => ({ p: p[i]!, y: r.y, w: r.w }));
  let correct = 0;
  let total = 0;
  for (const x of ws) {
    correct += x.w * (x.p >= 0.5 ? x.y : 1 - x.y);
    total += x.w;
  }
  const groups = new Map<string, Array<[number, number]>>();
  held.forEach((r, i) => {
    const key = `${r.context.task ?? ''}|${r.context.model ?? ''}`;
    let g = groups.get(key);
    if (g === undefined) groups.set(key, (g = []));
    g.push([p[i]!, r.y]);
  });
  const sps = [...groups.values()].filter((g) => g.length >= 3).map((g) => spearman(g.map((x) => x[0]), g.map((x) => x[1])));
  return {
    auc: auc(ws),
    log_loss: logLoss(ws),
    accuracy: total === 0 ? 0 : correct / total,
    ece: ece(ws),
    spearman: sps.length === 0 ? 0 : sps.reduce((a, b) => a + b, 0) / sps.length,
    examples: held.length,
  };
}

export interface TrainOutcome {
  meta: ModelMeta;
  onnx: Uint8Array;
  file: string;
  promoted: boolean;
  metrics: HeldOutMetrics;
  servingMetrics?: HeldOutMetrics;
  samples: number;
  epochs: number;
}

export async function trainFromStore(opts: {
  store: TrackingStore;
  modelsDir: string;
  serving: { onnx: Uint8Array; meta: ModelMeta } | undefined;
  minSamples: number;
  holdout: number;
  options: TrainRequestOptions;
  signal: AbortSignal;
  log: Logger;
}): Promise<TrainOutcome | { insufficient: number }> {
  const [executions, feedback, texts] = await Promise.all([opts.store.trainingExecutions(), opts.store.trainingFeedback(), opts.store.experiments.variantTexts()]);
  const rows = rowsFromHistory(executions, feedback, opts.holdout, texts);
  if (rows.length < opts.minSamples || !rows.some((r) => r.holdout) || rows.every((r) => r.holdout)) return { insufficient: rows.length };
  opts.log.info({ examples: rows.length, held_out: rows.filter((r) => r.holdout).length }, 'training data');
  const { weights, epochs } = await trainInWorker(rows, opts.options, opts.signal, opts.log);
  const metrics = heldOutMetrics(weights, rows);
  let servingMetrics: HeldOutMetrics | undefined;
  if (opts.serving !== undefined && opts.serving.meta.feature_spec_hash === specHash(FEATURE_SPEC)) servingMetrics = heldOutMetrics(readOnnxWeights(opts.serving.onnx), rows);
  // No worse than what serves now, on the same held-out split.
  const promoted = servingMetrics === undefined || metrics.log_loss <= servingMetrics.log_loss + 1e-9;
  const onnx = exportOnnx(weights, 'prompt-engine success predictor');
  const version = `m${new Date().toISOString().replace(/[-:.TZ]/g, '').slice(0, 14)}-${createHash('sha256').update(onnx).digest('hex').slice(0, 8)}`;
  const meta: ModelMeta = {
    version,
    feature_spec: FEATURE_SPEC,
    feature_spec_hash: specHash(FEATURE_SPEC),
    samples: rows.length,
    metrics: { ...metrics },
    trained_at: new Date().toISOString(),
    trained_on: 'tracking store',
  };
  const file = writeModel(opts.modelsDir, version, onnx, meta);
  return { meta, onnx, file, promoted, metrics, servingMetrics, samples: rows.length, epochs };
}
