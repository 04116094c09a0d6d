/**
 * Offline evaluation of the scorer on the multiprompt data, shared by the
 * test suite, `npm run train:default` and the model card:
 *  - within-task: per (task, model) group, half the templates are history,
 *    half unseen; rank the unseen half;
 *  - leave-tasks-out: train on some tasks, rank the templates of tasks the
 *    model has never seen;
 * with Spearman and top-1 regret against baselines in the same run (random,
 * the task's `default` template, a length-only model, nearest seen
 * neighbour by text similarity), and execution-level AUC / log-loss / ECE on
 * the held-out cells.
 */
import { createHash } from 'node:crypto';
import { featureDim, featurize, FEATURE_SPEC, type SparseVec } from '../features.js';
import { auc, ece, logLoss, spearman, top1Regret } from '../metrics.js';
import { predictAll, seeded, trainMlp, type Example, type MlpWeights, type TrainOptions } from '../mlp.js';
import type { Cell } from './multiprompt.js';

export function cellContext(c: Cell): Record<string, string> {
  return { model: c.model, task: c.task };
}

export function cellExample(c: Cell): Example {
  return { x: featurize(c.template, cellContext(c)), y: c.successes / c.n, w: c.n };
}

const h = (s: string): number => parseInt(createHash('sha256').update(s).digest('hex').slice(0, 8), 16);

/** Deterministic split of a task's templates: half history, half unseen. */
export function isHistory(templateId: string, seed = 1): boolean {
  return h(`${seed}:${templateId}`) % 2 === 0;
}

export interface RankingReport {
  groups: number;
  spearman: Record<string, number>;
  regret: Record<string, number>;
}

export interface EvalReport {
  withinTask: RankingReport;
  leaveTasksOut: RankingReport & { heldOutTasks: string[] };
  heldOutCells: { auc: number; logLoss: number; ece: number; cells: number; executions: number };
  train: { examples: number; epochs: number; seconds: number };
}

type Scorer = (cells: Cell[]) => number[];

const words = (s: string): Set<string> => new Set(s.toLowerCase().match(/[a-z0-9]+/g) ?? []);
function jaccard(a: Set<string>, b: Set<string>): number {
  let inter = 0;
  for (const x of a) if (b.has(x)) inter++;
  return inter === 0 ? 0 : inter / (a.size + b.size - inter);
}

/** Group key → cells. */
function groupBy(cells: Cell[], key: (c: Cell) => string): Map<string, Cell[]> {
  const m = new Map<string, Cell[]>();
  for (const c of cells) {
    const k = key(c);
    let l = m.get(k);
    if (l === undefined) m.set(k, (l = []));
    l.push(c);
  }
  return m;
}

/** Length-only model: acc ≈ a + b·log(len), least squares on the history (per model). */
function lengthOnly(history: Cell[]): Scorer {
  const fits = new Map<string, [number, number]>();
  for (const [model, cs] of groupBy(history, (c) => c.model)) {
    const xs = cs.map((c) => Math.log1p(c.template.length));
    const ys = cs.map((c) => c.acc);
    const mx = xs.reduce((s, x) => s + x, 0) / xs.length;
    const my = ys.reduce((s, y) => s + y, 0) / ys.length;
    let num = 0;
    let den = 0;
    xs.forEach((x, i) => {
      num += (x - mx) * (ys[i]! - my);
      den += (x - mx) ** 2;
    });
    const b = den === 0 ? 0 : num / den;
    fits.set(model, [my - b * mx, b]);
  }
  return (cells) => cells.map((c) => {
    const [a, b] = fits.get(c.model) ?? [0.5, 0];
    return a + b * Math.log1p(c.template.length);
  });
}

/** Nearest seen neighbour: the accuracy of the most similar history template for the same model (same task when it has history). */
function nearestNeighbour(history: Cell[]): Scorer {
  const byTaskModel = groupBy(history, (c) => `${c.task}|${c.model}`);
  const byModel = groupBy(history, (c) => c.model);
  const cache = new Map<string, Set<string>>();
  const ws = (t: string): Set<string> => {
    let s = cache.get(t);
    if (s === undefined) cache.set(t, (s = words(t)));
    return s;
  };
  return (cells) =>
    cells.map((c) => {
      const pool = byTaskModel.get(`${c.task}|${c.model}`) ?? byModel.get(c.model) ?? [];
      let best = -1;
      let acc = 0.5;
      const w = ws(c.template);
      for (const p of pool) {
        const s = jaccard(w, ws(p.template));
        if (s > best) {
          best = s;
          acc = p.acc;
        }
      }
      return acc;
    });
}

function rankGroups(unseen: Cell[], all: Cell[], scorers: Record<string, Scorer | 'random' | 'default'>): RankingReport {
  const groups = groupBy(unseen, (c) => `${c.task}|${c.model}`);
  const defaults = new Map(all.filter((c) => c.method === 'default').map((c) => [`${c.task}|${c.model}`, c.acc]));
  const scores: Record<string, number[]> = {};
  for (const [name, s] of Object.entries(scorers)) if (typeof s === 'function') scores[name] = s(unseen);
  const index = new Map(unseen.map((c, i) => [c, i]));
  const sp: Record<string, number[]> = {};
  const rg: Record<string, number[]> = {};
  let n = 0;
  for (const [key, cs] of groups) {
    if (cs.length < 3) continue;
    const truth = cs.map((c) => c.acc);
    if (Math.max(...truth) === Math.min(...truth)) continue; // nothing to rank
    n++;
    const best = Math.max(...truth);
    for (const [name, s] of Object.entries(scorers)) {
      (sp[name] ??= []).push(s === 'random' || s === 'default' ? 0 : spearman(cs.map((c) => scores[name]![index.get(c)!]!), truth));
      if (s === 'random') (rg[name] ??= []).push(best - truth.reduce((a, b) => a + b, 0) / truth.length);
      else if (s === 'default') (rg[name] ??= []).push(Math.max(0, best - (defaults.get(key) ?? truth.reduce((a, b) => a + b, 0) / truth.length)));
      else (rg[name] ??= []).push(top1Regret(cs.map((c) => scores[name]![index.get(c)!]!), truth));
    }
  }
  const mean = (x: number[]): number => x.reduce((s, y) => s + y, 0) / Math.max(1, x.length);
  return {
    groups: n,
    spearman: Object.fromEntries(Object.entries(sp).map(([k, v]) => [k, mean(v)])),
    regret: Object.fromEntries(Object.entries(rg).map(([k, v]) => [k, mean(v)])),
  };
}

export function trainOn(cells: Cell[], o: TrainOptions & { valFraction?: number } = {}): { weights: MlpWeights; epochs: number } {
  const rnd = seeded(o.seed ?? 7);
  const ex = cells.map(cellExample);
  const val: Example[] = [];
  const train: Example[] = [];
  for (const e of ex) (rnd() < (o.valFraction ?? 0.1) ? val : train).push(e);
  const r = trainMlp(train, val, featureDim(FEATURE_SPEC), o);
  return { weights: r.weights, epochs: r.epochs };
}

function modelScorer(w: MlpWeights): Scorer {
  const memo = new Map<Cell, number>();
  return (cells) => {
    const todo = cells.filter((c) => !memo.has(c));
    const xs: SparseVec[] = todo.map((c) => featurize(c.template, cellContext(c)));
    predictAll(w, xs).forEach((p, i) => memo.set(todo[i]!, p));
    return cells.map((c) => memo.get(c)!);
  };
}

export function evaluate(cells: Cell[], o: TrainOptions & { heldOutTasks?: string[] } = {}): EvalReport {
  const t0 = performance.now();
  // within-task
  const history = cells.filter((c) => isHistory(c.templateId));
  const unseen = cells.filter((c) => !isHistory(c.templateId));
  const within = trainOn(history, o);
  const trainSeconds = (performance.now() - t0) / 1000;
  const mlp = modelScorer(within.weights);
  const withinTask = rankGroups(unseen, cells, { model: mlp, random: 'random', default: 'default', length_only: lengthOnly(history), nearest_neighbour: nearestNeighbour(history) });
  const p = mlp(unseen);
  const w = unseen.map((c, i) => ({ p: p[i]!, y: c.successes / c.n, w: c.n }));
  const heldOutCells = { auc: auc(w), logLoss: logLoss(w), ece: ece(w), cells: unseen.length, executions: unseen.reduce((s, c) => s + c.n, 0) };

  // leave tasks out
  const tasks = [...new Set(cells.map((c) => c.task))].sort();
  const heldOutTasks = o.heldOutTasks ?? tasks.filter((t) => h(`lto:${t}`) % 4 === 0);
  const trainTasks = cells.filter((c) => !heldOutTasks.includes(c.task));
  const testTasks = cells.filter((c) => heldOutTasks.includes(c.task));
  const lto = trainOn(trainTasks, o);
  const leaveTasksOut = {
    ...rankGroups(testTasks, cells, { model: modelScorer(lto.weights), random: 'random', default: 'default', length_only: lengthOnly(trainTasks), nearest_neighbour: nearestNeighbour(trainTasks) }),
    heldOutTasks,
  };
  return { withinTask, leaveTasksOut, heldOutCells, train: { examples: history.length, epochs: within.epochs, seconds: trainSeconds } };
}
