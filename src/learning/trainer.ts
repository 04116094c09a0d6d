/**
 * Training from the tracking store: executions that carry a text, the
 * closed loop's counts (one row per variant and model) and feedback on
 * prompts whose text is known become weighted examples; a worker thread
 * trains the ranker (ranker.ts: pairwise within each (task, model) group,
 * calibrated to P(success)) on the rows not held out and measures the new
 * model on the held-out split beside the serving model (trainWorker.ts); the
 * model is stored (file + registry row) and promoted only when it is no
 * worse on that same split.
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
import type { HeldOutMetrics, UnseenMetrics } from './heldOut.js';
import type { RankerOptions } from './ranker.js';
import { exportOnnx } from './onnx.js';
import { writeModel, type ModelMeta } from './modelFile.js';
import type { TrainRow } from './trainRows.js';
import type { TrainRequest, TrainResult } from './trainWorker.js';
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

/**
 * Executions, the loop's counts and feedback → training rows. An execution carries its prompt's text
 * (metadata `prompt`); an aggregated cell (metadata n, successes) is one row of weight n. The closed
 * loop's outcomes carry no text: they come as their variant's counts (`loopOutcomes`, one row per
 * (variant, model), weighted by its outcomes), the text from `variantTexts`.
 */
export function rowsFromHistory(
  executions: ExecutionRow[],
  feedback: FeedbackRow[],
  holdoutFraction: number,
  variantTexts: ReadonlyMap<string, VariantText> = new Map(),
  loopOutcomes: ReadonlyArray<LoopOutcomes> = [],
): TrainRow[] {
  const rows: TrainRow[] = [];
  const textOf = new Map<string, { prompt: string; context: Record<string, string> }>();
  // One hash a prompt id, not one an execution (executions of one prompt share their split).
  const split = new Map<string, boolean>();
  const holdout = (promptId: string): boolean => {
    let h = split.get(promptId);
    if (h === undefined) split.set(promptId, (h = parseInt(createHash('sha256').update(`holdout:${promptId}`).digest('hex').slice(0, 8), 16) / 0xffffffff < holdoutFraction));
    return h;
  };
  for (const e of executions) {
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
  for (const o of loopOutcomes) {
    const known = variantTexts.get(o.prompt_id);
    if (known === undefined || !(o.n > 0)) continue;
    const context = { model: o.model, task: o.experiment };
    textOf.set(o.prompt_id, { prompt: known.text, context });
    rows.push({ prompt: known.text, context, y: Math.min(1, Math.max(0, o.successes / o.n)), w: o.n, holdout: holdout(o.prompt_id) });
  }
  for (const f of feedback) {
    const known = textOf.get(f.prompt_id);
    if (known === undefined) continue;
    rows.push({ prompt: known.prompt, context: { ...known.context, ...pick(f.context) }, y: Math.min(1, Math.max(0, f.rating / 5)), w: 1, holdout: holdout(f.prompt_id) });
  }
  return rows;
}

/** One variant's outcomes under one model, as the closed loop counted them. */
export interface LoopOutcomes {
  prompt_id: string;
  model: string;
  experiment: string;
  n: number;
  successes: number;
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

/** Train and measure in a worker thread (trainWorker.ts); the signal terminates it. */
export function trainInWorker(req: TrainRequest, signal: AbortSignal, log: Logger): Promise<TrainResult> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(workerFile(), { workerData: req });
    const onAbort = (): void => {
      void worker.terminate();
      reject(Object.assign(new Error('training was cancelled'), { name: 'AbortError' }));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    worker.on('message', (m: { type: string; epoch?: number; trainLoss?: number; valLoss?: number; result?: TrainResult }) => {
      if (m.type === 'epoch') {
        // Progress is a log record at info (never a raw stderr line: the Elixir client's log relay would take it for a warning).
        log.info({ epoch: m.epoch, trainLoss: m.trainLoss, valLoss: m.valLoss }, 'training epoch');
      } else if (m.type === 'done') {
        signal.removeEventListener('abort', onAbort);
        resolve(m.result!);
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
  const [executions, feedback, texts, loopOutcomes] = await Promise.all([
    opts.store.trainingExecutions(),
    opts.store.trainingFeedback(),
    opts.store.experiments.variantTexts(),
    opts.store.experiments.outcomesByVariant(),
  ]);
  const history = rowsFromHistory(executions, feedback, opts.holdout, texts, loopOutcomes);
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
  opts.log.info({ examples: rows.length, history: history.length, held_out: history.filter((r) => r.holdout).length, replayed: replay.length, loop_variants: loopOutcomes.length }, 'training data');
  // Trained and measured (the new model, and the serving one on the same split) in the worker: off the event loop.
  const trained = await trainInWorker(
    {
      rows,
      history: history.length,
      options: opts.options,
      ...(servingFits ? { serving: opts.serving!.onnx } : {}),
      ...(guard.length > 0 ? { unseen: { tasks: unseen, rows: guard } } : {}),
    },
    opts.signal,
    opts.log,
  );
  const { weights, epochs, metrics, servingMetrics, unseen: unseenNew, servingUnseen: unseenServing } = trained;
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
