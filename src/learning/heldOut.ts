/**
 * What a new model is promoted on, measured in the trainer's worker thread
 * (trainWorker.ts), never on the event loop that serves: its metrics on the
 * held-out split of the history, and its ranking of the corpus tasks the
 * serving model never saw. Pure functions of weights and rows.
 */
import { auc, ece, logLoss, spearman, top1Regret, type Weighted } from './metrics.js';
import { predictAll, type MlpWeights } from './mlp.js';
import { rowFeatures, type TrainRow } from './trainRows.js';

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
