/**
 * The trainer's worker thread: featurizes the rows it is given and trains
 * the ranker (ranker.ts) off the event loop on the rows not held out, posting
 * progress; the main thread terminates it to cancel. Rows are ranked against
 * the other rows of their (task, model) group. Input and output are plain
 * data (rows in, weights out).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { featurize, FEATURE_SPEC } from './features.js';
import type { Example } from './mlp.js';
import { SHIPPED_OPTIONS, trainRanker, type RankerOptions } from './ranker.js';

export interface TrainRow {
  prompt: string;
  context: Record<string, string>;
  y: number;
  w: number;
  holdout: boolean;
  /** The prompt it is a variant of (absent: its own base). */
  base?: string;
  /** The prompt's and the base's embeddings (features v3). */
  embedding?: Float32Array;
  baseEmbedding?: Float32Array;
}

/** A row's features. */
export function rowFeatures(r: TrainRow) {
  return featurize(r.prompt, r.context, FEATURE_SPEC, { base: r.base, embedding: r.embedding, baseEmbedding: r.baseEmbedding ?? (r.base === undefined ? r.embedding : undefined) });
}

export interface TrainRequest {
  rows: TrainRow[];
  options: Omit<RankerOptions, 'onEpoch' | 'shouldStop'>;
}

/** Rows → examples, grouped by (task, model). */
export function rowExamples(rows: TrainRow[]): Example[] {
  const groups = new Map<string, number>();
  return rows.map((r) => {
    const key = `${r.context.task ?? ''}|${r.context.model ?? ''}`;
    let g = groups.get(key);
    if (g === undefined) groups.set(key, (g = groups.size));
    return { x: rowFeatures(r), y: r.y, w: r.w, group: g };
  });
}

if (parentPort !== null && workerData !== undefined) {
  const { rows, options } = workerData as TrainRequest;
  const train = rows.filter((r) => !r.holdout);
  const result = trainRanker(rowExamples(train), { ...SHIPPED_OPTIONS, ...options, onEpoch: (e) => parentPort!.postMessage({ type: 'epoch', ...e }) }, train.map((r) => r.context));
  const w = result.weights;
  parentPort.postMessage({ type: 'done', weights: w, epochs: Math.max(...result.epochs) }, [w.w1.buffer, w.b1.buffer, w.w2.buffer, w.b2.buffer, w.w3.buffer, w.b3.buffer] as ArrayBuffer[]);
}
