/**
 * Training from the tracking store: executions (and feedback on prompts
 * whose text is known) become weighted examples, a worker thread trains the
 * ranker (ranker.ts: pairwise within each (task, model) group, calibrated to
 * P(success)) on the rows not held out, the new model is measured on the
 * held-out split beside the serving model, stored (file + registry row), and
 * promoted only when it is no worse on that same split.
 *
 * So that retraining does not forget what the shipped model knew, the
 * shipped corpus (data/multiprompt, when present) trains beside the history:
 * up to CORPUS_PER_GROUP templates of each (task, model) group (a fixed
 * choice by hash: a replay sample, bounded in cost), never those of the
 * tasks the serving model records as unseen. On those unseen tasks both
 * models rank every template, and the new one is promoted only when it is
 * no worse there either (mean Spearman per (task, model) group).
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { REPO_ROOT } from '../config.js';
import type { ExecutionRow, FeedbackRow, TrackingStore } from '../store/trackingStore.js';
import { FEATURE_SPEC, specHash } from './features.js';
import { auc, ece, logLoss, spearman, top1Regret, type Weighted } from './metrics.js';
import { predictAll, type MlpWeights } from './mlp.js';
import type { RankerOptions } from './ranker.js';
import { exportOnnx, readOnnxWeights } from './onnx.js';
import { writeModel, type ModelMeta } from './modelFile.js';
import { rowFeatures, type TrainRow } from './trainWorker.js';
import type { Cell } from './corpus.js';
import { EMBED_MAX_TEXTS } from './embeddings.js';
import type { Embed } from './scorer.js';

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
  const p = predictAll(w, held.map(rowFeatures));
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
  /** The new and the serving model on the corpus tasks neither saw (when the corpus was replayed). */
  unseen?: UnseenMetrics;
  servingUnseen?: UnseenMetrics;
  samples: number;
  epochs: number;
}

/** Templates of each corpus (task, model) group that retraining replays. */
export const CORPUS_PER_GROUP = 24;

/** Corpus cells as training rows: up to `perGroup` templates of each group (by a hash of the template id), none of `unseen` tasks. */
export function corpusRows(cells: readonly Cell[], unseen: readonly string[], perGroup = CORPUS_PER_GROUP): TrainRow[] {
  const rank = (c: Cell): number => parseInt(createHash('sha256').update(`replay:${c.templateId}`).digest('hex').slice(0, 8), 16);
  const groups = new Map<string, Cell[]>();
  for (const c of cells) {
    if (unseen.includes(c.task)) continue;
    const k = `${c.task}|${c.model}`;
    let g = groups.get(k);
    if (g === undefined) groups.set(k, (g = []));
    g.push(c);
  }
  return [...groups.values()].flatMap((g) =>
    g
      .sort((a, b) => rank(a) - rank(b))
      .slice(0, perGroup)
      .map((c) => ({ prompt: c.template, context: { model: c.model, task: c.task }, y: c.successes / c.n, w: c.n, holdout: false, base: c.base })),
  );
}

/** Ranking on corpus tasks a model never saw: mean Spearman and top-1 regret over their (task, model) groups. */
export interface UnseenMetrics {
  tasks: string[];
  groups: number;
  spearman: number;
  regret: number;
}

export function unseenMetrics(w: MlpWeights, rows: TrainRow[], tasks: string[]): UnseenMetrics {
  const p = predictAll(w, rows.map(rowFeatures));
  const groups = new Map<string, Array<[number, number]>>();
  rows.forEach((r, i) => {
    const k = `${r.context.task}|${r.context.model}`;
    let g = groups.get(k);
    if (g === undefined) groups.set(k, (g = []));
    g.push([p[i]!, r.y]);
  });
  const ranked = [...groups.values()].filter((g) => g.length >= 3 && new Set(g.map((x) => x[1])).size > 1);
  const mean = (xs: number[]): number => (xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length);
  return {
    tasks,
    groups: ranked.length,
    spearman: mean(ranked.map((g) => spearman(g.map((x) => x[0]), g.map((x) => x[1])))),
    regret: mean(ranked.map((g) => top1Regret(g.map((x) => x[0]), g.map((x) => x[1])))),
  };
}

/** Fill in the embeddings of every row's prompt and base (the embedding service caches them). */
export async function attachEmbeddings(rows: TrainRow[], embed: Embed | undefined): Promise<void> {
  if (embed === undefined || FEATURE_SPEC.embedding === undefined) return;
  const texts = [...new Set(rows.flatMap((r) => (r.base === undefined ? [r.prompt] : [r.prompt, r.base])))];
  const vec = new Map<string, Float32Array>();
  for (let i = 0; i < texts.length; i += EMBED_MAX_TEXTS) {
    const batch = texts.slice(i, i + EMBED_MAX_TEXTS);
    (await embed(batch)).forEach((v, k) => vec.set(batch[k]!, v));
  }
  for (const r of rows) {
    r.embedding = vec.get(r.prompt);
    r.baseEmbedding = vec.get(r.base ?? r.prompt);
  }
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
  /** The prompt embeddings (features v3); without it the embedding features are absent. */
  embed?: Embed;
  /** The shipped corpus to replay beside the history (absent: history only). */
  corpus?: readonly Cell[];
}): Promise<TrainOutcome | { insufficient: number }> {
  const [executions, feedback, texts] = await Promise.all([opts.store.trainingExecutions(), opts.store.trainingFeedback(), opts.store.experiments.variantTexts()]);
  const history = rowsFromHistory(executions, feedback, opts.holdout, texts);
  if (history.length < opts.minSamples || !history.some((r) => r.holdout) || history.every((r) => r.holdout)) return { insufficient: history.length };
  const servingFits = opts.serving !== undefined && opts.serving.meta.feature_spec_hash === specHash(FEATURE_SPEC);
  const unseen = opts.corpus === undefined ? [] : (opts.serving?.meta.unseen_tasks ?? []);
  const replay = opts.corpus === undefined ? [] : corpusRows(opts.corpus, unseen);
  const guard = opts.corpus === undefined || !servingFits ? [] : corpusRows(opts.corpus.filter((c) => unseen.includes(c.task)), [], Infinity);
  const rows = [...history, ...replay];
  // Embedding new prompts takes a while (about 0.1 s each, once): a cancelled training stops here too.
  const cancelled = new Promise<never>((_, reject) => {
    const abort = (): void => reject(Object.assign(new Error('training was cancelled'), { name: 'AbortError' }));
    if (opts.signal.aborted) abort();
    else opts.signal.addEventListener('abort', abort, { once: true });
  });
  cancelled.catch(() => undefined);
  await Promise.race([attachEmbeddings([...rows, ...guard], opts.embed), cancelled]);
  opts.log.info({ examples: rows.length, history: history.length, held_out: history.filter((r) => r.holdout).length, replayed: replay.length }, 'training data');
  const { weights, epochs } = await trainInWorker(rows, opts.options, opts.signal, opts.log);
  const metrics = heldOutMetrics(weights, history);
  let servingMetrics: HeldOutMetrics | undefined;
  let unseenNew: UnseenMetrics | undefined;
  let unseenServing: UnseenMetrics | undefined;
  if (servingFits) {
    const servingWeights = readOnnxWeights(opts.serving!.onnx);
    servingMetrics = heldOutMetrics(servingWeights, history);
    if (guard.length > 0) {
      unseenNew = unseenMetrics(weights, guard, unseen);
      unseenServing = unseenMetrics(servingWeights, guard, unseen);
    }
  }
  // No worse than what serves now on the same held-out split, and on the corpus tasks neither model saw.
  const promoted =
    servingMetrics === undefined || (metrics.log_loss <= servingMetrics.log_loss + 1e-9 && (unseenNew === undefined || unseenNew.spearman >= unseenServing!.spearman - 1e-9));
  const onnx = exportOnnx(weights, 'prompt-engine success predictor');
  const version = `m${new Date().toISOString().replace(/[-:.TZ]/g, '').slice(0, 14)}-${createHash('sha256').update(onnx).digest('hex').slice(0, 8)}`;
  const meta: ModelMeta = {
    version,
    feature_spec: FEATURE_SPEC,
    feature_spec_hash: specHash(FEATURE_SPEC),
    samples: rows.length,
    metrics: { ...metrics, ...(unseenNew === undefined ? {} : { unseen_spearman: unseenNew.spearman, unseen_regret: unseenNew.regret }) },
    trained_at: new Date().toISOString(),
    trained_on: replay.length > 0 ? `tracking store and ${replay.length} cells of data/multiprompt` : 'tracking store',
    // Tasks of the corpus no model of this line ever trained on, carried from the serving model also when the
    // corpus was not replayed (then this one trained on none of it): the next corpus retrain still guards on them.
    ...((opts.serving?.meta.unseen_tasks ?? []).length > 0 ? { unseen_tasks: opts.serving!.meta.unseen_tasks } : {}),
  };
  const file = writeModel(opts.modelsDir, version, onnx, meta);
  return { meta, onnx, file, promoted, metrics, servingMetrics, unseen: unseenNew, servingUnseen: unseenServing, samples: rows.length, epochs };
}
