/**
 * A training row (a prompt's text, its context, a target and a weight, and
 * which split it is in) and its features: what the trainer makes from the
 * store and what its worker thread trains and measures on. Plain data, so
 * that rows cross into the worker as they are.
 */
import { featurize, FEATURE_SPEC } from './features.js';
import type { Example } from './mlp.js';

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
