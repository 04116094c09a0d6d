/**
 * Offline evaluation of the scorer on the multiprompt data, shared by the
 * test suite, `npm run train:default` and the model card:
 *  - within-task: per (task, model) group, half the templates are history,
 *    half unseen; one model trained on all history ranks the unseen half;
 *  - leave-tasks-out: k folds by task (task families held out together by
 *    default), every task held out once; each fold's model is trained on the
 *    other tasks' cells only and ranks the templates of the held-out tasks;
 * with Spearman and top-1 regret per (task, model) group — reported per
 * group, per fold and overall — against baselines in the same run (random,
 * the task's `default` template, a length-only model, nearest seen
 * neighbour by text similarity; each fitted on the same training cells as
 * the model), and execution-level AUC / log-loss / ECE on the within-task
 * held-out cells. Models train in worker threads (RankPool).
 *
 * Within task it also ranks as the closed loop ranks its reserve (the
 * model blended with what the group's measured templates achieved,
 * neighbours by meaning: `reserveEstimate`), with the loop's default
 * constants, and with constants chosen by nested leave-tasks-out (a small
 * grid, each task fold judged with the set best on the other folds).
 */
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { REPO_ROOT } from '../../config.js';
import { featurize, FEATURE_SPEC, specHash, type FeatureSpec, type SparseVec } from '../features.js';
import { auc, ece, logLoss, spearman, top1Regret } from '../metrics.js';
import { predictAll, type Example, type MlpWeights } from '../mlp.js';
import type { Cell } from './multiprompt.js';
import { corpusEmbedding } from './corpusEmbeddings.js';
import { cosine, EMBEDDING_MODEL, meaningKernel } from '../embeddings.js';
import { DEFAULT_POLICY, measuredWeight, MIN_NEIGHBOUR_OUTCOMES, pooledRate, reserveEstimate, type LoopPolicy, type MeasuredRate } from '../../experiments/experiment.js';
import { smoothedRate } from '../../experiments/objective.js';
import { assemble, trainRanker, type RankerOptions } from '../ranker.js';
import type { RankJob } from './rankWorker.js';

export function cellContext(c: Cell): Record<string, string> {
  return { model: c.model, task: c.task };
}

/** Features of a cell (memoised per cell: the spec is fixed, nothing in it is fitted to data). */
const featureMemo = new WeakMap<FeatureSpec, WeakMap<Cell, SparseVec>>();
export function cellFeatures(c: Cell, spec: FeatureSpec = FEATURE_SPEC): SparseVec {
  let memo = featureMemo.get(spec);
  if (memo === undefined) featureMemo.set(spec, (memo = new WeakMap()));
  let x = memo.get(c);
  if (x === undefined) {
    const e = spec.embedding;
    const rel = e === undefined ? { base: c.base } : { base: c.base, embedding: corpusEmbedding(e.model, c.template), baseEmbedding: corpusEmbedding(e.model, c.base) };
    memo.set(c, (x = featurize(c.template, cellContext(c), spec, rel)));
  }
  return x;
}

export function cellExample(c: Cell, spec: FeatureSpec = FEATURE_SPEC): Example {
  return { x: cellFeatures(c, spec), y: c.successes / c.n, w: c.n };
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

/** The loop's ranking within task with constants chosen on the other task folds, beside the set best on all (in-sample). */
export interface LoopRankingReport {
  nested: { spearman: number; regret: number; folds: Array<{ heldOutTasks: string[]; constants: LoopConstants; regret: number }> };
  inSample: { spearman: number; regret: number; constants: LoopConstants };
}

export interface EvalReport {
  withinTask: RankingReport & { perGroup: GroupResult[]; loopRanking?: LoopRankingReport };
  leaveTasksOut: RankingReport & { folds: FoldReport[]; perGroup: GroupResult[] };
  heldOutCells: { auc: number; logLoss: number; ece: number; cells: number; executions: number };
  /** within-task training set size, best epoch of each member, and the wall time of the whole evaluation */
  train: { examples: number; epochs: number[]; seconds: number };
}

type Scorer = (cells: Cell[]) => number[];

const words = (s: string): Set<string> => new Set(s.toLowerCase().match(/[a-z0-9]+/g) ?? []);
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
  // Each distinct history template once (in history order), with its accuracy per model; a test
  // template's similarity to each is computed once and serves every model (same result as scanning
  // each model's pool in history order and keeping the first most similar).
  const vocab = new Map<string, number>();
  const ids = (t: string): Int32Array => Int32Array.from([...words(t)].map((w) => vocab.get(w) ?? vocab.set(w, vocab.size).get(w)!)).sort();
  interface Entry { task: string; words: Int32Array; acc: Map<string, number> }
  const entries: Entry[] = [];
  const byKey = new Map<string, Entry>();
  for (const c of history) {
    const key = `${c.task}\u0000${c.templateId}`;
    let e = byKey.get(key);
    if (e === undefined) {
      byKey.set(key, (e = { task: c.task, words: ids(c.template), acc: new Map() }));
      entries.push(e);
    }
    e.acc.set(c.model, c.acc);
  }
  const taskModels = new Set(history.map((c) => `${c.task}|${c.model}`));
  const memo = new Map<string, Map<string, number>>();
  const bestPerModel = (template: string, task: string | undefined): Map<string, number> => {
    const key = `${task ?? ''}\u0000${template}`;
    let out = memo.get(key);
    if (out !== undefined) return out;
    const w = ids(template);
    const best = new Map<string, number>();
    out = new Map();
    for (const e of entries) {
      if (task !== undefined && e.task !== task) continue;
      const s = jaccardIds(w, e.words);
      for (const [model, acc] of e.acc)
        if (s > (best.get(model) ?? -1)) {
          best.set(model, s);
          out.set(model, acc);
        }
    }
    memo.set(key, out);
    return out;
  };
  return (cells) => cells.map((c) => bestPerModel(c.template, taskModels.has(`${c.task}|${c.model}`) ? c.task : undefined).get(c.model) ?? 0.5);
}

function jaccardIds(a: Int32Array, b: Int32Array): number {
  let i = 0;
  let j = 0;
  let inter = 0;
  while (i < a.length && j < b.length) {
    if (a[i] === b[j]) {
      inter++;
      i++;
      j++;
    } else if (a[i]! < b[j]!) i++;
    else j++;
  }
  return inter === 0 ? 0 : inter / (a.length + b.length - inter);
}

export interface GroupResult {
  task: string;
  model: string;
  /** leave-tasks-out fold the group was held out in (absent within task) */
  fold?: number;
  prompts: number;
  spearman: Record<string, number>;
  regret: Record<string, number>;
}

function summarise(groups: GroupResult[]): RankingReport {
  const sp: Record<string, number[]> = {};
  const rg: Record<string, number[]> = {};
  for (const g of groups) {
    for (const [k, v] of Object.entries(g.spearman)) (sp[k] ??= []).push(v);
    for (const [k, v] of Object.entries(g.regret)) (rg[k] ??= []).push(v);
  }
  const mean = (x: number[]): number => x.reduce((s, y) => s + y, 0) / Math.max(1, x.length);
  return {
    groups: groups.length,
    spearman: Object.fromEntries(Object.entries(sp).map(([k, v]) => [k, mean(v)])),
    regret: Object.fromEntries(Object.entries(rg).map(([k, v]) => [k, mean(v)])),
  };
}

type LoopConstants = Pick<LoopPolicy, 'neighbourBandwidth' | 'neighbourK' | 'scorerWeight'>;

/** The loop's ranking constants the nested within-task figure chooses among: the ones a deployment can set (PROMPT_ENGINE_LOOP_*). */
const LOOP_GRID: LoopConstants[] = [0.02, 0.05, 0.1].flatMap((neighbourBandwidth) => [0, 0.25, 0.5, 1, 2].map((scorerWeight) => ({ neighbourBandwidth, neighbourK: DEFAULT_POLICY.neighbourK, scorerWeight })));
const constantsName = (c: LoopConstants): string => `loop h${c.neighbourBandwidth} w${c.scorerWeight}`;

/**
 * The closed loop's order for a group's unmeasured templates
 * (experiments/experiment.ts, reserveEstimate): what the group's measured
 * templates (`history`) achieved, neighbours by meaning, blended with
 * `model`'s prediction (`scorerWeight` 0: the neighbours alone). A cell's
 * cosines to its group's history are computed once for every constant set.
 */
function loopRankings(history: Cell[], model: Scorer, grid: readonly LoopConstants[]): Scorer[] {
  const groups = new Map<string, { vectors: Float32Array[]; measured: MeasuredRate[]; overall: number }>();
  for (const [key, all] of groupBy(history, (c) => `${c.task}|${c.model}`)) {
    const cs = all.filter((c) => c.n >= MIN_NEIGHBOUR_OUTCOMES);
    if (cs.length === 0) continue;
    const measured = cs.map((c) => ({ rate: smoothedRate(c.successes, c.n), weight: measuredWeight(c.n) }));
    groups.set(key, { vectors: cs.map((c) => corpusEmbedding(EMBEDDING_MODEL, c.template)), measured, overall: pooledRate(measured) });
  }
  const cosines = new Map<Cell, number[]>();
  const cosOf = (c: Cell, vectors: Float32Array[]): number[] => {
    let cs = cosines.get(c);
    if (cs === undefined) {
      const v = corpusEmbedding(EMBEDDING_MODEL, c.template);
      cosines.set(c, (cs = vectors.map((u) => cosine(v, u))));
    }
    return cs;
  };
  return grid.map((k) => (cells) => {
    const p = model(cells);
    return cells.map((c, i) => {
      const g = groups.get(`${c.task}|${c.model}`);
      if (g === undefined) return p[i]!;
      return reserveEstimate(cosOf(c, g.vectors).map((x) => meaningKernel(x, k.neighbourBandwidth)), g.measured, g.overall, p[i]!, k);
    });
  });
}

/** Constants chosen by nested leave-tasks-out: each fold's groups judged with the set of lowest regret on the other folds. */
function nestedChoice(groups: GroupResult[], folds: string[][], grid: readonly LoopConstants[]): LoopRankingReport {
  const mean = (x: number[]): number => x.reduce((a, b) => a + b, 0) / Math.max(1, x.length);
  const regretOf = (k: LoopConstants, gs: GroupResult[]): number => mean(gs.map((g) => g.regret[constantsName(k)]!));
  const best = (gs: GroupResult[]): LoopConstants => grid.reduce((b, k) => (regretOf(k, gs) < regretOf(b, gs) ? k : b));
  const chosen: LoopRankingReport['nested']['folds'] = [];
  const sp: number[] = [];
  const rg: number[] = [];
  for (const heldOut of folds) {
    const constants = best(groups.filter((g) => !heldOut.includes(g.task)));
    const mine = groups.filter((g) => heldOut.includes(g.task));
    sp.push(...mine.map((g) => g.spearman[constantsName(constants)]!));
    rg.push(...mine.map((g) => g.regret[constantsName(constants)]!));
    chosen.push({ heldOutTasks: heldOut, constants, regret: regretOf(constants, mine) });
  }
  const all = best(groups);
  return {
    nested: { spearman: mean(sp), regret: mean(rg), folds: chosen },
    inSample: { spearman: mean(groups.map((g) => g.spearman[constantsName(all)]!)), regret: regretOf(all, groups), constants: all },
  };
}

/**
 * Spearman and top-1 regret of every scorer in every (task, model) group of
 * `unseen` with 3+ prompts whose accuracies differ. `random` is the expected
 * value of a random pick (Spearman 0, regret best − mean); `default` picks the
 * task's benchmark template (its mean accuracy when the task has several) and
 * ranks nothing (Spearman 0).
 */
function rankGroups(unseen: Cell[], all: Cell[], scorers: Record<string, Scorer | 'random' | 'default'>, fold?: number): GroupResult[] {
  const groups = groupBy(unseen, (c) => `${c.task}|${c.model}`);
  const defaults = new Map<string, number[]>();
  for (const c of all) {
    if (c.method !== 'default') continue;
    const key = `${c.task}|${c.model}`;
    defaults.set(key, [...(defaults.get(key) ?? []), c.acc]);
  }
  const scores: Record<string, number[]> = {};
  for (const [name, s] of Object.entries(scorers)) if (typeof s === 'function') scores[name] = s(unseen);
  const index = new Map(unseen.map((c, i) => [c, i]));
  const out: GroupResult[] = [];
  const mean = (x: number[]): number => x.reduce((a, b) => a + b, 0) / x.length;
  for (const [key, cs] of groups) {
    if (cs.length < 3) continue;
    const truth = cs.map((c) => c.acc);
    if (Math.max(...truth) === Math.min(...truth)) continue; // nothing to rank
    const best = Math.max(...truth);
    const g: GroupResult = { task: cs[0]!.task, model: cs[0]!.model, ...(fold === undefined ? {} : { fold }), prompts: cs.length, spearman: {}, regret: {} };
    for (const [name, s] of Object.entries(scorers)) {
      if (s === 'random') {
        g.spearman[name] = 0;
        g.regret[name] = best - mean(truth);
      } else if (s === 'default') {
        const d = defaults.get(key);
        g.spearman[name] = 0;
        g.regret[name] = Math.max(0, best - (d === undefined ? mean(truth) : mean(d)));
      } else {
        const sc = cs.map((c) => scores[name]![index.get(c)!]!);
        g.spearman[name] = spearman(sc, truth);
        g.regret[name] = top1Regret(sc, truth);
      }
    }
    out.push(g);
  }
  return out;
}

/** Ranking groups: one per (task, model). */
export function groupIds(cells: Cell[]): number[] {
  const ids = new Map<string, number>();
  return cells.map((c) => {
    const k = `${c.task}|${c.model}`;
    let g = ids.get(k);
    if (g === undefined) ids.set(k, (g = ids.size));
    return g;
  });
}

/** Which cells a model is trained on: all but some tasks, or the history half of every group. */
export interface Selection {
  excludeTasks?: string[];
  historyOnly?: boolean;
}

export function selectCells(cells: Cell[], s: Selection): Cell[] {
  const ex = new Set(s.excludeTasks ?? []);
  return cells.filter((c) => !ex.has(c.task) && (s.historyOnly !== true || isHistory(c.templateId)));
}

/** Training examples of cells: soft target k/n, weight n, ranking group (task, model). */
export function examplesOf(cells: Cell[], spec: FeatureSpec = FEATURE_SPEC): Example[] {
  const gid = groupIds(cells);
  return cells.map((c, i) => ({ ...cellExample(c, spec), group: gid[i]! }));
}

/** Train the ranker on cells in this thread (members one after another). */
export function trainOn(cells: Cell[], o: RankerOptions = {}): { weights: MlpWeights; epochs: number[] } {
  return trainRanker(examplesOf(cells, o.spec), o, cells.map(cellContext));
}

/**
 * Worker threads training ranking members in parallel (each holds the cells);
 * members are assembled (difficulty head, calibration) in this thread. The
 * workers run the compiled dist/ (build first); a worker whose feature spec
 * differs from this build's is refused.
 */
export class RankPool {
  private readonly workers: Worker[] = [];
  private readonly idle: Worker[] = [];
  private readonly queue: Array<{ job: RankJob; resolve: (r: { weights: MlpWeights; epochs: number }) => void; reject: (e: Error) => void }> = [];
  private readonly pending = new Map<number, { resolve: (r: { weights: MlpWeights; epochs: number }) => void; reject: (e: Error) => void; worker: Worker }>();
  private nextId = 0;
  private readonly ready: Promise<void>;

  constructor(
    private readonly cells: Cell[],
    private readonly options: RankerOptions,
    size: number,
  ) {
    // plain data only (callbacks such as onEpoch or progress stay in this thread)
    const plain = JSON.parse(JSON.stringify(options)) as RankerOptions;
    const expected = specHash(options.spec ?? FEATURE_SPEC);
    const readies: Array<Promise<void>> = [];
    for (let i = 0; i < size; i++) {
      const w = new Worker(path.join(REPO_ROOT, 'dist', 'src', 'learning', 'offline', 'rankWorker.js'), { workerData: { cells, options: plain } });
      this.workers.push(w);
      w.on('error', (err) => {
        // a worker that dies fails every job it holds
        for (const [id, p] of this.pending) if (p.worker === w) {
          this.pending.delete(id);
          p.reject(err);
        }
      });
      readies.push(
        new Promise<void>((resolve, reject) => {
          w.once('error', reject);
          w.on('message', (m: { type: string; id?: number; specHash?: string; weights?: MlpWeights; epochs?: number; message?: string }) => {
            if (m.type === 'ready') {
              if (m.specHash !== expected) reject(new Error(`the rank worker (dist/) computes feature spec ${m.specHash}, this build ${expected}: run npm run build`));
              else resolve();
              return;
            }
            const p = this.pending.get(m.id!);
            if (p === undefined) return;
            this.pending.delete(m.id!);
            if (m.type === 'done') p.resolve({ weights: m.weights!, epochs: m.epochs! });
            else p.reject(new Error(`rank worker: ${m.message}`));
            this.idle.push(w);
            this.pump();
          });
        }),
      );
    }
    this.ready = Promise.all(readies).then(() => {
      this.idle.push(...this.workers);
      this.pump();
    });
  }

  private pump(): void {
    while (this.idle.length > 0 && this.queue.length > 0) {
      const w = this.idle.shift()!;
      const q = this.queue.shift()!;
      this.pending.set(q.job.id, { resolve: q.resolve, reject: q.reject, worker: w });
      w.postMessage(q.job);
    }
  }

  member(selection: Selection, seed: number): Promise<{ weights: MlpWeights; epochs: number }> {
    return new Promise((resolve, reject) => {
      this.queue.push({ job: { id: this.nextId++, selection, seed }, resolve, reject });
      void this.ready.then(() => this.pump(), reject);
    });
  }

  /** The ranker on a selection of the cells: members in the workers, assembly here. */
  async train(selection: Selection): Promise<{ weights: MlpWeights; epochs: number[] }> {
    const seed = this.options.seed ?? 42;
    const k = this.options.ensemble ?? 3;
    const members = await Promise.all(Array.from({ length: k }, (_, i) => this.member(selection, seed + i)));
    const cells = selectCells(this.cells, selection);
    const { weights } = assemble(
      members.map((m) => m.weights),
      examplesOf(cells, this.options.spec),
      seed,
      this.options.spec,
      cells.map(cellContext),
    );
    return { weights, epochs: members.map((m) => m.epochs) };
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

/** Train on a selection with the pool when there is one, else in this thread. */
function trainSelection(cells: Cell[], selection: Selection, o: RankerOptions, pool: RankPool | undefined): Promise<{ weights: MlpWeights; epochs: number[] }> {
  return pool !== undefined ? pool.train(selection) : Promise.resolve(trainOn(selectCells(cells, selection), o));
}

function modelScorer(w: MlpWeights, spec: FeatureSpec = FEATURE_SPEC): Scorer {
  const memo = new Map<Cell, number>();
  return (cells) => {
    const todo = cells.filter((c) => !memo.has(c));
    const xs: SparseVec[] = todo.map((c) => cellFeatures(c, spec));
    predictAll(w, xs).forEach((p, i) => memo.set(todo[i]!, p));
    return cells.map((c) => memo.get(c)!);
  };
}

/**
 * Task families: tasks that are variants of one another (the same puzzle with
 * more objects, the opposite comparison). A family is held out together, so
 * that "unseen task" never means "its sibling was in training".
 */
export function taskFamily(task: string): string {
  if (task.startsWith('logical_deduction_')) return 'logical_deduction';
  if (task === 'less_letters' || task === 'more_letters') return 'letters';
  if (task === 'all_words_from_category' || task === 'any_words_from_category') return 'words_from_category';
  return task;
}

/**
 * Deterministic folds by task: families (largest first, ties by a hash of the
 * name) go to the fold with the fewest tasks so far, BBH and LMentry spread
 * across folds. Every task is held out exactly once.
 */
export function taskFolds(cells: Cell[], k: number, families = true): string[][] {
  const suiteOf = new Map(cells.map((c) => [c.task, c.suite]));
  const fams = groupBy([...suiteOf.keys()].map((t) => ({ task: t }) as Cell), (c) => (families ? taskFamily(c.task) : c.task));
  const order = [...fams.entries()]
    .map(([f, cs]) => ({ f, tasks: cs.map((c) => c.task).sort(), suite: suiteOf.get(cs[0]!.task)! }))
    .sort((a, b) => b.tasks.length - a.tasks.length || a.suite.localeCompare(b.suite) || h(`fold:${a.f}`) - h(`fold:${b.f}`));
  const folds: string[][] = Array.from({ length: k }, () => []);
  const suiteCount = Array.from({ length: k }, () => new Map<string, number>());
  for (const fam of order) {
    let best = 0;
    for (let i = 1; i < k; i++) {
      const a = [folds[i]!.length, suiteCount[i]!.get(fam.suite) ?? 0];
      const b = [folds[best]!.length, suiteCount[best]!.get(fam.suite) ?? 0];
      if (a[0]! < b[0]! || (a[0] === b[0] && a[1]! < b[1]!)) best = i;
    }
    folds[best]!.push(...fam.tasks);
    suiteCount[best]!.set(fam.suite, (suiteCount[best]!.get(fam.suite) ?? 0) + fam.tasks.length);
  }
  return folds.map((f) => f.sort());
}

export interface EvalOptions extends RankerOptions {
  /** number of leave-tasks-out folds (default 5) */
  folds?: number;
  /** hold task families out together (default true; false: every task is its own unit) */
  families?: boolean;
  /** worker threads training members in parallel (default: min(2, cores)); 0 trains in this thread */
  workers?: number;
  /** progress lines (stderr in the CLI and the test) */
  progress?: (line: string) => void;
  /** run only one part (experiments); the other is reported empty */
  only?: 'within' | 'lto';
}

export type FoldReport = RankingReport & { fold: number; heldOutTasks: string[]; epochs: number[] };

export async function evaluate(cells: Cell[], o: EvalOptions = {}): Promise<EvalReport> {
  const say = o.progress ?? ((): void => undefined);
  const t0 = performance.now();
  const since = (): string => `${((performance.now() - t0) / 1000).toFixed(0)} s`;
  const nWorkers = o.workers ?? Math.min(2, os.availableParallelism());
  const pool = nWorkers > 0 ? new RankPool(cells, o, nWorkers) : undefined;
  try {
    const folds = o.only === 'within' ? [] : taskFolds(cells, o.folds ?? 5, o.families ?? true);
    const history = cells.filter((c) => isHistory(c.templateId));
    // every model is started at once (the pool keeps the workers busy); results are taken in order
    const withinModel = o.only === 'lto' ? undefined : trainSelection(cells, { historyOnly: true }, o, pool);
    const foldModels = folds.map((heldOut) => trainSelection(cells, { excludeTasks: heldOut }, o, pool));
    say(`training ${withinModel === undefined ? 0 : 1} within-task and ${folds.length} leave-tasks-out models (${o.ensemble ?? 3} members each) on ${nWorkers || 'no'} worker thread(s)`);

    // within-task: trained on the history half of every group, ranks the other half
    let withinTask: EvalReport['withinTask'] = { groups: 0, spearman: {}, regret: {}, perGroup: [] };
    let heldOutCells: EvalReport['heldOutCells'] = { auc: 0.5, logLoss: 0, ece: 0, cells: 0, executions: 0 };
    let withinEpochs: number[] = [];
    if (withinModel !== undefined) {
      const within = await withinModel;
      withinEpochs = within.epochs;
      const unseen = cells.filter((c) => !isHistory(c.templateId));
      const mlp = modelScorer(within.weights, o.spec);
      // The loop's ranking: with its default constants, the neighbours alone (no scorer), and every set of the grid (one cosine cache for all).
      const [loopDefault, neighboursAlone, ...gridScorers] = loopRankings(history, mlp, [DEFAULT_POLICY, { ...DEFAULT_POLICY, scorerWeight: 0 }, ...LOOP_GRID]);
      const groups = rankGroups(unseen, cells, { model: mlp, random: 'random', default: 'default', length_only: lengthOnly(history), nearest_neighbour: nearestNeighbour(history), neighbours_by_meaning: neighboursAlone!, loop_ranking: loopDefault! });
      const gridGroups = rankGroups(unseen, cells, Object.fromEntries(LOOP_GRID.map((k, i) => [constantsName(k), gridScorers[i]!])));
      withinTask = { ...summarise(groups), perGroup: groups, loopRanking: nestedChoice(gridGroups, o.only === 'within' ? taskFolds(cells, o.folds ?? 5, o.families ?? true) : folds, LOOP_GRID) };
      say(`[${since()}] within-task (best epochs ${within.epochs.join('/')}): ${fmt(withinTask)}`);
      const lr = withinTask.loopRanking!;
      say(`[${since()}] within-task, the loop's ranking with constants chosen on the other task folds: ρ ${lr.nested.spearman.toFixed(3)} regret ${lr.nested.regret.toFixed(3)} (in-sample ${constantsName(lr.inSample.constants)}: ρ ${lr.inSample.spearman.toFixed(3)} regret ${lr.inSample.regret.toFixed(3)})`);
      const p = mlp(unseen);
      const w = unseen.map((c, i) => ({ p: p[i]!, y: c.successes / c.n, w: c.n }));
      heldOutCells = { auc: auc(w), logLoss: logLoss(w), ece: ece(w), cells: unseen.length, executions: unseen.reduce((s, c) => s + c.n, 0) };
    }

    // leave tasks out: k folds by task (families together); the held-out tasks' cells never enter training
    const ltoGroups: GroupResult[] = [];
    const perFold: FoldReport[] = [];
    for (const [fold, heldOut] of folds.entries()) {
      const model = await foldModels[fold]!;
      const trainCells = cells.filter((c) => !heldOut.includes(c.task));
      const testCells = cells.filter((c) => heldOut.includes(c.task));
      const gs = rankGroups(testCells, cells, { model: modelScorer(model.weights, o.spec), random: 'random', default: 'default', length_only: lengthOnly(trainCells), nearest_neighbour: nearestNeighbour(trainCells) }, fold);
      ltoGroups.push(...gs);
      const r = { fold, heldOutTasks: heldOut, epochs: model.epochs, ...summarise(gs) };
      perFold.push(r);
      say(`[${since()}] leave-tasks-out fold ${fold + 1}/${folds.length} (${heldOut.join(', ')}; ${trainCells.length} training cells; best epochs ${model.epochs.join('/')}): ${fmt(r)}`);
    }
    const leaveTasksOut = { ...summarise(ltoGroups), folds: perFold, perGroup: ltoGroups };
    if (folds.length > 0) say(`[${since()}] leave-tasks-out overall: ${fmt(leaveTasksOut)}`);
    return { withinTask, leaveTasksOut, heldOutCells, train: { examples: history.length, epochs: withinEpochs, seconds: (performance.now() - t0) / 1000 } };
  } finally {
    await pool?.close();
  }
}

function fmt(r: RankingReport): string {
  return Object.keys(r.regret)
    .map((k) => `${k} ρ ${r.spearman[k]!.toFixed(3)} regret ${r.regret[k]!.toFixed(3)}`)
    .join(' | ');
}
