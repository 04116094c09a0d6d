/**
 * The closed loop on real measured data (`npm run bench:loop`).
 *
 * Every (task, model) group of data/multiprompt starts from the task's first
 * `default` template. Each round: `choose_prompt` → success ~ Bernoulli(the
 * served paraphrase's measured accuracy for that model) → `track_execution`
 * with the reply's metadata. Proposals come from a fake OpenAI-compatible
 * server that answers with paraphrases of the same task the request does
 * not already contain. The engine never sees an accuracy. Folds leave tasks
 * out: each fold's scorer is trained on the other folds' tasks only, so
 * the scorer in use has never seen the simulated task.
 *
 * Through the op table in-process (the same handlers the Port and NATS
 * serve; no transport in the way), on PGlite, groups concurrently.
 * Baselines in the same run, on the same groups and rounds: always the
 * original, plain Thompson over 10 and over 20 random paraphrases.
 *
 * Fleet mode (`--sidecars N`): N engines share one PostgreSQL (a fresh
 * database per run on DATABASE_URL or TEST_DATABASE_URL); choices go to
 * them round-robin and each outcome to a random one; one engine alone on
 * PostgreSQL runs beside it on the same groups and draws. The fleet runs
 * twice: with every engine caught up with the store's counts and the
 * decider's work before it serves (the simulation's clock stopped for all
 * while the decider works, as it is for one engine alone;
 * EngineOptions.caughtUp), and with each engine serving on what it last
 * heard meanwhile.
 *
 * `--pace R` spaces each group's rounds at least 1/R s apart (default:
 * as fast as the engine serves, tens of rounds a second per group, so
 * several of one experiment's rounds fall within one refresh window); a
 * paced run's table goes to its own file (`loop-fleet-3-pace-5.md`).
 *
 * Nested leave-tasks-out (`--nested`): the loop's policy constants are
 * chosen honestly. Every constant set of a small grid runs on every fold;
 * for each fold, the set with the lowest median last-100 regret on the
 * OTHER folds is chosen and its figures on this fold are reported; beside
 * it the in-sample figure (the set best on all folds, judged on all folds).
 * `--grid 'priorStrength=2,4;warmup=6,10'` sets the grid (every
 * combination); the default varies one constant at a time around
 * DEFAULT_POLICY.
 *
 * Graded outcomes (`--graded`): each call's score is the share of 5
 * Bernoulli draws at the served paraphrase's measured accuracy, its tokens
 * the prompt's length (characters / 4, plus a fixed 60-token question) and
 * a fixed 20-token answer, each token costing PRICE_PER_TOKEN; the reward
 * is score − cost. The engine optimizing that reward (objective `reward`)
 * runs beside the engine optimizing success alone, plain Thompson sampling
 * on the same reward, and the original; each is judged by its regret on
 * the expected reward, and by the accuracy and tokens it ends up serving.
 *
 *   npm run bench:loop [-- --rounds 1000 --folds 4 --tasks a,b --retrain-every 0 --seeds 1]
 *   npm run bench:loop -- --graded [--price 0.003]
 *   npm run bench:loop -- --nested [--grid 'priorStrength=1,2,4;retireBelow=0.15,0.25']
 *   bash scripts/with-services.sh npm run bench:loop -- --sidecars 3 [--pace 5 --fold 3]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createHash } from 'node:crypto';
import type { TermObject } from '../src/codec/terms.js';
import { loadConfig, REPO_ROOT, type EngineConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { createDatabase } from '../test/helpers/pg.js';
import { FEATURE_SPEC, specHash } from '../src/learning/features.js';
import { writeModel } from '../src/learning/modelFile.js';
import { exportOnnx } from '../src/learning/onnx.js';
import { RankPool, taskFolds } from '../src/learning/offline/evaluation.js';
import { SHIPPED_OPTIONS } from '../src/learning/ranker.js';
import { loadCells, type Cell } from '../src/learning/offline/multiprompt.js';
import { createOpTable } from '../src/ops/index.js';
import { hashSeed, seededRandom } from '../src/random.js';
import { createEngine } from '../src/services.js';
import { alwaysOriginal, gradedScore, gradedSummary, plainThompson, plainThompsonGraded, score, summary, type GradedScore, type GradedWorld, type GroupScore } from '../src/learning/offline/loopSim/baselines.js';
import { accuracyOf, groupsOf, loadTasks, type Group, type Task } from '../src/learning/offline/loopSim/world.js';
import { startFakeParaphraser } from '../src/learning/offline/loopSim/fakeParaphraser.js';

const argv = process.argv.slice(2);
const flag = (name: string, dflt: string): string => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : dflt;
};
const ROUNDS = Number(flag('rounds', '1000'));
const FOLDS = Number(flag('folds', '4'));
const RETRAIN_EVERY = flag('retrain-every', '0');
const SEEDS = Number(flag('seeds', '1'));
const ONLY = flag('tasks', '');
const ONLY_FOLD = Number(flag('fold', '0'));
const SIDECARS = Number(flag('sidecars', '1'));
/** At most this many rounds a second per group (0: as fast as the engine serves); a deployment's pace, so that staleness counts in its rounds. */
const PACE = Number(flag('pace', '0'));
const NESTED = argv.includes('--nested');
const GRID = flag('grid', '');
const GRADED = argv.includes('--graded');
/** Cost of one token under the graded objective: 0.003 makes the best paraphrase by accuracy not the best by reward in about half the groups. */
const PRICE_PER_TOKEN = Number(flag('price', '0.003'));
const QUESTION_TOKENS = 60;
const ANSWER_TOKENS = 20;
const DRAWS_PER_SCORE = 5;
/** The graded world: what a served text earns in expectation (the simulator's and scoreboard's, never the engine's). */
const GRADED_WORLD: GradedWorld = {
  accuracy: (g, text) => accuracyOf(g, text),
  tokens: (text) => Math.ceil(text.trim().length / 4) + QUESTION_TOKENS,
  reward: (g, text) => accuracyOf(g, text) - PRICE_PER_TOKEN * (GRADED_WORLD.tokens(text) + ANSWER_TOKENS),
};
/** The reward objective the engine is given: the same reward, from the tokens it is told. */
const REWARD_OBJECTIVE = { kind: 'reward', cost_weight: 1, input_token_cost: PRICE_PER_TOKEN, output_token_cost: PRICE_PER_TOKEN };
/** One graded call's observed score: the share of DRAWS_PER_SCORE Bernoulli draws at `acc`. */
function drawScore(acc: number, rnd: () => number): number {
  let k = 0;
  for (let i = 0; i < DRAWS_PER_SCORE; i++) if (rnd() < acc) k++;
  return k / DRAWS_PER_SCORE;
}
const PG_URL = process.env.DATABASE_URL || process.env.TEST_DATABASE_URL || '';
if (SIDECARS > 1 && PG_URL === '') {
  process.stderr.write('bench:loop --sidecars needs PostgreSQL: run it through `bash scripts/with-services.sh npm run bench:loop -- --sidecars 3`, or set DATABASE_URL\n');
  process.exit(2);
}
const OUT = path.join(REPO_ROOT, 'bench', '.out', 'loop');
const progress = (m: string): void => void process.stderr.write(`[bench:loop] ${m}\n`);


/** Every cell of data/multiprompt, read once (the folds and every fold scorer need them). */
let cellsRead: Cell[] | undefined;
const allCells = (): Cell[] => (cellsRead ??= loadCells());

/**
 * Folds by task, task families held out together (the scorer evaluation's
 * `taskFolds`): logical_deduction ×3, less/more_letters and all/any_words_from_category
 * are variants of one task, so a fold's scorer never trained on a sibling of
 * the task it is judged on.
 */
function folds(tasks: Task[], k: number): Task[][] {
  const byName = new Map(tasks.map((t) => [t.name, t]));
  const cells = allCells().filter((c) => byName.has(c.task));
  return taskFolds(cells, k).map((names) => names.map((n) => byName.get(n)!)).filter((f) => f.length > 0);
}

/** A scorer trained on every task but `heldOut` (cached by content under bench/.out). */
async function foldModelDir(heldOut: Task[]): Promise<string> {
  const names = heldOut.map((t) => t.name).sort();
  const key = createHash('sha256').update(JSON.stringify([names, specHash(FEATURE_SPEC), fs.readFileSync(path.join(REPO_ROOT, 'dist', 'src', 'learning', 'mlp.js')), fs.readFileSync(path.join(REPO_ROOT, 'dist', 'src', 'learning', 'ranker.js')), SHIPPED_OPTIONS])).digest('hex').slice(0, 12);
  const dir = path.join(OUT, 'models', key);
  if (fs.existsSync(path.join(dir, 'default.onnx'))) return dir;
  const all = allCells();
  const cells = all.filter((c) => !names.includes(c.task));
  progress(`training the fold scorer without ${names.join(', ')} (${cells.length} cells, ${SHIPPED_OPTIONS.ensemble} ranking members in worker threads)`);
  const pool = new RankPool(all, SHIPPED_OPTIONS, Math.min(2, os.availableParallelism()));
  const { weights } = await pool.train({ excludeTasks: names }).finally(() => pool.close());
  const onnx = exportOnnx(weights, 'bench:loop fold scorer');
  writeModel(dir, 'default', onnx, {
    version: `fold-${key}`,
    feature_spec: FEATURE_SPEC,
    feature_spec_hash: specHash(FEATURE_SPEC),
    samples: cells.length,
    metrics: {},
    trained_at: new Date().toISOString(),
    trained_on: `data/multiprompt without ${names.join(', ')}`,
  });
  return dir;
}

interface EngineRun {
  scores: GroupScore[];
  /** The texts served, by group (in the order of `groups`). */
  served: string[][];
  figures: TermObject;
  /** Summed over the engines: outcomes counted nowhere in a view, and outcomes a view read the store for first (it had not heard of their variant yet). */
  unmatched: number;
  caughtUp: number;
  pairsPerSecond: number;
  llmRequests: number;
}

interface EngineOptions {
  sidecars: number;
  postgres: boolean;
  /**
   * Fleet mode: before an engine serves a choice, the deciding engine takes the store's counts of that
   * experiment, its work (the decisions they lead to, a proposal batch) ends, and the serving engine takes
   * the store's state: the simulation's clock stops for every engine while the decider works, as it stops
   * for one engine alone (PROMPT_ENGINE_LOOP_AWAIT_PROPOSALS). What a deployment does when an experiment's
   * choices come further apart than a refresh of the counts (a tenth of the staleness bound) and the
   * decider's work take. Without it, engines serve and decide on what they last heard: in-process, rounds
   * of an experiment come tens of times a second, several within one refresh window, and rounds go on
   * while the decider works, which one engine alone never serves.
   */
  caughtUp?: boolean;
  policy?: PolicyOverrides;
  graded?: 'reward' | 'success';
}

/**
 * The engine on every group: `sidecars` engines (PostgreSQL when more than
 * one, or when `postgres`), choices round-robin, each outcome to a random
 * engine (its own draws, so the success draws are the same whatever the
 * routing).
 */
async function runEngine(groups: Group[], tasks: Task[], modelsDir: string, seed: number, opts: EngineOptions): Promise<EngineRun> {
  const llm = await startFakeParaphraser(tasks);
  const db = opts.postgres ? await createDatabase(PG_URL, 'pe_bench_loop') : undefined;
  const dataDirs: string[] = [];
  const engines = Array.from({ length: opts.sidecars }, () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-loop-'));
    dataDirs.push(dataDir);
    const config = loadConfig(
      { ...process.env, DATABASE_URL: db?.url ?? '', NATS_URL: '', PROMPT_ENGINE_LOOP_AWAIT_PROPOSALS: '1', PROMPT_ENGINE_RETRAIN_EVERY: RETRAIN_EVERY },
      { dataDir, modelsDir, llmUrl: llm.url, llmModel: 'fake', ...(opts.policy === undefined ? {} : { loopPolicy: opts.policy }) },
    );
    return createEngine(config, createLogger(process.env.LOG_LEVEL ?? 'warn'));
  });
  const table = createOpTable();
  const signal = new AbortController().signal;
  const call = async (engine: (typeof engines)[number], op: string, args: TermObject): Promise<TermObject> => {
    const r = await table.dispatch(op, args, { signal, engine, log: engine.log, transport: 'local' });
    if (!r.ok) throw new Error(`${op}: {${r.reason}, ${r.message}}`);
    return r.value as TermObject;
  };
  const services = await Promise.all(engines.map((e) => e.service('experiments')));
  // Before an engine serves, the decider decides on the store's counts and its work reaches the serving engine's view (EngineOptions.caughtUp).
  let undecided = 0;
  const catchUp = async (i: number, name: string, model: string): Promise<void> => {
    if (!opts.caughtUp) return;
    const decider = services.find((s) => s.deciding);
    if (decider === undefined) {
      undecided++; // no engine held the lease: this round served without catching up (printed at the end)
      return;
    }
    await decider.readNow(name, model);
    await decider.quiet(name, model);
    if (decider !== services[i]) await services[i]!.readNow(name, model);
  };
  let done = 0;
  const t0 = performance.now();
  const ticker = setInterval(() => progress(`  ${done}/${groups.length * ROUNDS} rounds`), 5000);
  const objective: TermObject = opts.graded === 'reward' ? { objective: REWARD_OBJECTIVE } : {};
  const runs = await Promise.all(
    groups.map(async (g) => {
      const rnd = seededRandom(hashSeed(`${seed}|${g.task.name}|${g.model}`));
      const route = seededRandom(hashSeed(`route|${seed}|${g.task.name}|${g.model}`));
      const served: number[] = [];
      const texts: string[] = [];
      const start = performance.now();
      for (let r = 0; r < ROUNDS; r++) {
        if (PACE > 0) {
          const wait = start + (r * 1000) / PACE - performance.now();
          if (wait > 0) await sleep(wait);
        }
        const chooser = r % engines.length;
        await catchUp(chooser, g.task.name, g.model);
        const c = await call(engines[chooser]!, 'choose_prompt', { experiment: g.task.name, prompt: g.task.base.text, context: { model: g.model }, ...objective });
        const text = String(c.prompt);
        const acc = accuracyOf(g, text);
        served.push(acc);
        texts.push(text);
        const reporter = engines[Math.floor(route() * engines.length)]!;
        const outcome: TermObject =
          opts.graded === undefined
            ? { success: rnd() < acc }
            : { score: drawScore(acc, rnd), input_tokens: GRADED_WORLD.tokens(text), output_tokens: ANSWER_TOKENS };
        await call(reporter, 'track_execution', { prompt_id: c.prompt_id!, ...outcome, execution_time_ms: 0, metadata: c.metadata! });
        done++;
      }
      return { score: score(g, served), texts };
    }),
  );
  const scores = runs.map((r) => r.score);
  clearInterval(ticker);
  const seconds = (performance.now() - t0) / 1000;
  const figures: TermObject[] = [];
  for (const e of engines) {
    await (await e.service('experiments')).settle();
    figures.push((await e.serviceStats()).experiments ?? {});
    await e.close();
  }
  await llm.close();
  await db?.drop();
  for (const d of dataDirs) fs.rmSync(d, { recursive: true, force: true });
  const deciding = figures.find((f) => f.deciding === true) ?? figures[0]!;
  if (figures.length > 1) progress(`  each engine's full refreshes / heartbeats missed / refreshes: ${figures.map((f) => `${String(f.full_refreshes)} / ${String(f.heartbeats_missed)} / ${String(f.refreshes)}`).join('; ')}`);
  if (opts.caughtUp) progress(`  rounds served while no engine decided (not caught up): ${undecided}`);
  const summed = (k: string): number => figures.reduce((a, f) => a + Number(f[k] ?? 0), 0);
  return {
    scores,
    served: runs.map((r) => r.texts),
    figures: deciding,
    unmatched: summed('unmatched_outcomes'),
    caughtUp: summed('caught_up'),
    pairsPerSecond: (groups.length * ROUNDS) / seconds,
    llmRequests: llm.requests,
  };
}

function baselineScores(groups: Group[], seed: number): Record<string, GroupScore[]> {
  const out: Record<string, GroupScore[]> = { 'always original': [], 'Thompson, 10 random paraphrases': [], 'Thompson, 20 random paraphrases': [] };
  for (const g of groups) {
    out['always original']!.push(score(g, alwaysOriginal(g, ROUNDS)));
    for (const k of [10, 20]) out[`Thompson, ${k} random paraphrases`]!.push(score(g, plainThompson(g, k, ROUNDS, seededRandom(hashSeed(`ts${k}|${seed}|${g.task.name}|${g.model}`)))));
  }
  return out;
}

const fmt = (x: number): string => (x >= 0 ? ' ' : '') + x.toFixed(3);

/** A result table on stdout, and under bench/results/ when the run covered every task (a partial run is not a result). */
function report(lines: string[], file: string | undefined): void {
  process.stdout.write(`${lines.join('\n')}\n`);
  if (file === undefined) return;
  fs.mkdirSync(path.join(REPO_ROOT, 'bench', 'results'), { recursive: true });
  fs.writeFileSync(path.join(REPO_ROOT, 'bench', 'results', file), `${lines.join('\n')}\n`);
}

type PolicyOverrides = EngineConfig['loopPolicy'];

/** The grid of constant sets: every combination of `--grid`, or one constant at a time around the defaults. */
function grid(): PolicyOverrides[] {
  if (GRID === '') return [{}, { neighbourBandwidth: 0 }, { priorStrength: 4 }, { warmup: 10 }, { retireBelow: 0.15 }];
  let sets: PolicyOverrides[] = [{}];
  for (const part of GRID.split(';').filter((p) => p.trim() !== '')) {
    const [name, values] = part.split('=') as [keyof PolicyOverrides, string];
    sets = sets.flatMap((s) => values.split(',').map((v) => ({ ...s, [name.trim()]: Number(v) })));
  }
  return sets;
}

const nameOf = (p: PolicyOverrides): string => (Object.keys(p).length === 0 ? 'defaults' : Object.entries(p).map(([k, v]) => `${k} ${v}`).join(', '));

/** Nested leave-tasks-out: every constant set on every fold, then each fold judged with the set chosen on the others. */
async function nested(tasks: Task[], parts: Task[][]): Promise<void> {
  const sets = grid();
  const runs: GroupScore[][][] = sets.map(() => []); // [set][fold] → scores
  for (const [i, heldOut] of parts.entries()) {
    const modelsDir = await foldModelDir(heldOut);
    const groups = heldOut.flatMap(groupsOf);
    for (const [k, policy] of sets.entries()) {
      progress(`nested: fold ${i + 1}/${parts.length}, constants ${k + 1}/${sets.length} (${nameOf(policy)}) — ${groups.length} groups × ${ROUNDS} rounds`);
      runs[k]![i] = (await runEngine(groups, tasks, modelsDir, 1, { sidecars: 1, postgres: false, policy })).scores;
    }
  }
  const pooled = (k: number, folds: number[]): GroupScore[] => folds.flatMap((f) => runs[k]![f]!);
  const best = (folds: number[]): number => {
    let b = 0;
    for (let k = 1; k < sets.length; k++) {
      const m = summary(pooled(k, folds));
      const mb = summary(pooled(b, folds));
      if (m.regretMedian < mb.regretMedian - 1e-12 || (Math.abs(m.regretMedian - mb.regretMedian) <= 1e-12 && m.gainMean > mb.gainMean)) b = k;
    }
    return b;
  };
  const all = parts.map((_, i) => i);
  const nestedScores: GroupScore[] = [];
  const rows: string[] = [];
  for (const i of all) {
    const k = best(all.filter((f) => f !== i));
    nestedScores.push(...runs[k]![i]!);
    const m = summary(runs[k]![i]!);
    rows.push(`| ${i + 1} | ${parts[i]!.map((t) => t.name).join(', ')} | ${nameOf(sets[k]!)} | ${fmt(m.regretMedian)} | ${fmt(m.gainMean)} |`);
  }
  const inSample = best(all);
  const n = summary(nestedScores);
  const s = summary(pooled(inSample, all));
  const lines = [
    `Nested leave-tasks-out choice of the loop's constants: ${sets.length} constant sets × ${parts.length} folds × ${ROUNDS} rounds, 1 seed, PGlite, fake paraphrasing LLM, fold scorers; ${os.cpus().length} cores.`,
    '',
    '| constants | last-100 regret, median | last-100 regret, mean | gain, mean |',
    '|---|---:|---:|---:|',
    ...sets.map((p, k) => {
      const m = summary(pooled(k, all));
      return `| ${nameOf(p)} (all folds) | ${fmt(m.regretMedian)} | ${fmt(m.regretMean)} | ${fmt(m.gainMean)} |`;
    }),
    `| **nested: each fold with the set chosen on the other folds** | ${fmt(n.regretMedian)} | ${fmt(n.regretMean)} | ${fmt(n.gainMean)} |`,
    `| in-sample: the set best on all folds (${nameOf(sets[inSample]!)}) | ${fmt(s.regretMedian)} | ${fmt(s.regretMean)} | ${fmt(s.gainMean)} |`,
    '',
    '| fold | held-out tasks | constants chosen on the other folds | regret median | gain mean |',
    '|---:|---|---|---:|---:|',
    ...rows,
  ];
  report(lines, ONLY === '' ? 'loop-nested.md' : undefined);
}

/** Graded outcomes and cost: the engine on the reward, the engine on success alone, plain Thompson on the reward, the original. */
async function graded(tasks: Task[], parts: Task[][]): Promise<void> {
  const all: Record<string, GradedScore[]> = {};
  const add = (name: string, s: GradedScore[]): void => void (all[name] ??= []).push(...s);
  for (let seed = 1; seed <= SEEDS; seed++) {
    for (const [i, heldOut] of parts.entries()) {
      if (ONLY_FOLD > 0 && i + 1 !== ONLY_FOLD) continue;
      const modelsDir = await foldModelDir(heldOut);
      const groups = heldOut.flatMap(groupsOf);
      progress(`graded: fold ${i + 1}/${parts.length} (seed ${seed}): ${heldOut.map((t) => t.name).join(', ')} — ${groups.length} groups × ${ROUNDS} rounds`);
      add('always original', groups.map((g) => gradedScore(g, new Array<string>(ROUNDS).fill(g.task.base.text), GRADED_WORLD)));
      for (const k of [10, 20]) {
        add(
          `plain Thompson on the reward, ${k} random paraphrases`,
          groups.map((g) => {
            const rnd = seededRandom(hashSeed(`gts${k}|${seed}|${g.task.name}|${g.model}`));
            const observe = (t: string): number => drawScore(accuracyOf(g, t), rnd) - PRICE_PER_TOKEN * (GRADED_WORLD.tokens(t) + ANSWER_TOKENS);
            return gradedScore(g, plainThompsonGraded(g, k, ROUNDS, rnd, observe), GRADED_WORLD);
          }),
        );
      }
      for (const [name, objective] of [['engine, objective success (the score ignored)', 'success'], ['engine, objective reward (score − cost)', 'reward']] as const) {
        const run = await runEngine(groups, tasks, modelsDir, seed, { sidecars: 1, postgres: false, graded: objective });
        progress(`  ${name}: ${run.pairsPerSecond.toFixed(0)} pairs/s, ${run.llmRequests} proposal requests`);
        add(name, groups.map((g, k) => gradedScore(g, run.served[k]!, GRADED_WORLD)));
      }
    }
  }
  const first = gradedSummary(Object.values(all)[0]!);
  const lines = [
    `Graded outcomes and cost on data/multiprompt: ${first.groups / SEEDS} (task, model) groups × ${ROUNDS} rounds, ${parts.length} leave-tasks-out folds, ${SEEDS} seed(s); a call's score is the share of ${DRAWS_PER_SCORE} draws at the served paraphrase's accuracy, its cost ${PRICE_PER_TOKEN} per token (prompt characters / 4 + ${QUESTION_TOKENS} question tokens + ${ANSWER_TOKENS} answer tokens), reward = score − cost. In ${(first.tradeOffShare * 100).toFixed(0)}% of the groups the best paraphrase by accuracy is not the best by reward. Engine through the op table in-process (PGlite, fake paraphrasing LLM, fold scorer); ${os.cpus().length} cores.`,
    '',
    '| policy | reward regret, last 100, median | mean | reward gain over the original, mean | accuracy served, last 100 | prompt tokens served, last 100 |',
    '|---|---:|---:|---:|---:|---:|',
    ...Object.entries(all).map(([name, s]) => {
      const m = gradedSummary(s);
      return `| ${name} | ${fmt(m.regretMedian)} | ${fmt(m.regretMean)} | ${fmt(m.gainMean)} | ${m.accuracy.toFixed(3)} | ${m.tokens.toFixed(1)} |`;
    }),
  ];
  report(lines, ONLY === '' && ONLY_FOLD === 0 ? 'loop-graded.md' : undefined);
}

async function main(): Promise<void> {
  let tasks = loadTasks();
  if (ONLY !== '') tasks = tasks.filter((t) => ONLY.split(',').includes(t.name));
  const parts = folds(tasks, Math.min(FOLDS, tasks.length));
  if (NESTED) return nested(tasks, parts);
  if (GRADED) return graded(tasks, parts);
  const all: Record<string, GroupScore[]> = {};
  const perFold: string[] = [];
  const rates: number[] = [];
  const requests: Record<string, number> = {};
  const matching: Record<string, { unmatched: number; caughtUp: number }> = {};
  for (let seed = 1; seed <= SEEDS; seed++) {
    for (const [i, heldOut] of parts.entries()) {
      if (ONLY_FOLD > 0 && i + 1 !== ONLY_FOLD) continue;
      const modelsDir = await foldModelDir(heldOut);
      const groups = heldOut.flatMap(groupsOf);
      progress(`fold ${i + 1}/${parts.length} (seed ${seed}): ${heldOut.map((t) => t.name).join(', ')} — ${groups.length} groups × ${ROUNDS} rounds`);
      const results: Record<string, GroupScore[]> = baselineScores(groups, seed);
      const engineRuns: Array<[string, EngineOptions]> =
        SIDECARS > 1
          ? [
              ['engine, 1 sidecar (PostgreSQL)', { sidecars: 1, postgres: true }],
              [`engine, ${SIDECARS} sidecars, caught up before each choice`, { sidecars: SIDECARS, postgres: true, caughtUp: true }],
              [`engine, ${SIDECARS} sidecars, serving meanwhile`, { sidecars: SIDECARS, postgres: true }],
            ]
          : [['engine', { sidecars: 1, postgres: false }]];
      for (const [name, opts] of engineRuns) {
        const run = await runEngine(groups, tasks, modelsDir, seed, opts);
        rates.push(run.pairsPerSecond);
        requests[name] = (requests[name] ?? 0) + run.llmRequests;
        matching[name] = { unmatched: (matching[name]?.unmatched ?? 0) + run.unmatched, caughtUp: (matching[name]?.caughtUp ?? 0) + run.caughtUp };
        progress(`  ${name}: ${run.pairsPerSecond.toFixed(0)} choose+track pairs/s, ${run.llmRequests} proposal requests, ${JSON.stringify(run.figures)}`);
        results[name] = run.scores;
      }
      for (const [name, s] of Object.entries(results)) {
        (all[name] ??= []).push(...s);
        const m = summary(s);
        perFold.push(`| ${seed} | ${i + 1} | ${heldOut.map((t) => t.name).join(', ')} | ${name} | ${fmt(m.regretMedian)} | ${fmt(m.regretMean)} | ${fmt(m.gainMean)} |`);
      }
    }
  }
  const lines = [
    `Closed loop on data/multiprompt: ${Object.values(all)[0]!.length / SEEDS} (task, model) groups × ${ROUNDS} rounds, ${parts.length} leave-tasks-out folds, ${SEEDS} seed(s); engine through the op table in-process (${SIDECARS > 1 ? `PostgreSQL, 1 and ${SIDECARS} engines sharing it, each outcome to a random engine [caught up: each engine takes the store's state and the decider's work before it serves; serving meanwhile: it serves what it last heard]` : 'PGlite'}, fake paraphrasing LLM, fold scorer, retrain every ${RETRAIN_EVERY} outcomes${PACE > 0 ? `, at most ${PACE} rounds a second per group` : ''}); ${os.cpus().length} cores.`,
    '',
    '| policy | last-100 regret, median | last-100 regret, mean | gain, mean | gain, median |',
    '|---|---:|---:|---:|---:|',
    ...Object.entries(all).map(([name, s]) => {
      const m = summary(s);
      return `| ${name} | ${fmt(m.regretMedian)} | ${fmt(m.regretMean)} | ${fmt(m.gainMean)} | ${fmt(m.gainMedian)} |`;
    }),
    '',
    `Engine throughput in this run (in-process, groups concurrent): ${Math.min(...rates).toFixed(0)}–${Math.max(...rates).toFixed(0)} choose+track pairs/s.`,
    '',
    `Proposal requests to the LLM: ${Object.entries(requests).map(([k, v]) => `${k} ${v}`).join('; ')}.`,
    '',
    `Outcomes summed over the engines: counted in no view (\`unmatched_outcomes\`) / matched after the engine's view read the store, its variant not heard of yet (\`caught_up\`): ${Object.entries(matching).map(([k, v]) => `${k} ${v.unmatched} / ${v.caughtUp}`).join('; ')}.`,
    '',
    '| seed | fold | held-out tasks | policy | regret median | regret mean | gain mean |',
    '|---:|---:|---|---|---:|---:|---:|',
    ...perFold,
  ];
  // A paced run is a result of its own: it never overwrites the full-speed one.
  const paced = PACE > 0 ? `-pace-${PACE}` : '';
  report(lines, ONLY === '' && ONLY_FOLD === 0 ? (SIDECARS > 1 ? `loop-fleet-${SIDECARS}${paced}.md` : `loop${paced}.md`) : undefined);
}

await main();
