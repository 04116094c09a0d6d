/**
 * What data/multiprompt allows, whatever the scorer or the loop
 * (`npm run build && node dist/bench/ceilings.js`): reference points for
 * issue 27's goals, measured on the data itself, no model trained.
 *
 *  - Ranking an unseen task's templates: how well a template's accuracy for
 *    one model is predicted by what the OTHER models measured on the very
 *    same templates of the same task (information a scorer that never saw
 *    the task does not have): their plain mean, their mean weighted by each
 *    model's agreement with the target on the other tasks (no hindsight),
 *    and the single best other model chosen in hindsight. Mean Spearman and
 *    top-1 regret over the (task, model) groups, as test/learning-eval
 *    reports them, beside the task's `default` template's regret.
 *  - How noisy one group's accuracies are: the share of their variance over
 *    templates that is not binomial noise (n executions a template).
 *  - The closed loop's pool: the last-100 regret if the loop served the best
 *    of k paraphrases drawn at random from the task's pool, identified
 *    without error (median and mean over the groups), for k variants tried.
 */
import { loadCells, type Cell } from '../src/learning/offline/multiprompt.js';
import { spearman, top1Regret } from '../src/learning/metrics.js';
import { seededRandom } from '../src/random.js';

const say = (m: string): void => void process.stderr.write(`[bench:ceilings] ${m}\n`);
const mean = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

say('loading data/multiprompt');
const cells = loadCells();
/** task → model → templateId → cell */
const byTask = new Map<string, Map<string, Map<string, Cell>>>();
for (const c of cells) {
  const models = byTask.get(c.task) ?? byTask.set(c.task, new Map()).get(c.task)!;
  (models.get(c.model) ?? models.set(c.model, new Map()).get(c.model)!).set(c.templateId, c);
}
const tasks = [...byTask.keys()].sort();

/** Templates every model of the task measured, with the target's accuracies. */
function shared(models: Map<string, Map<string, Cell>>): string[] {
  const all = [...models.values()];
  return [...all[0]!.keys()].filter((t) => all.every((m) => m.has(t)));
}

/** Mean Spearman of two models' accuracies over a task's templates, on every task but `except`. */
function agreement(a: string, b: string, except: string): number {
  const rs: number[] = [];
  for (const task of tasks) {
    if (task === except) continue;
    const models = byTask.get(task)!;
    const ma = models.get(a);
    const mb = models.get(b);
    if (ma === undefined || mb === undefined) continue;
    const ids = [...ma.keys()].filter((t) => mb.has(t));
    if (ids.length >= 5) rs.push(spearman(ids.map((t) => ma.get(t)!.acc), ids.map((t) => mb.get(t)!.acc)));
  }
  return rs.length === 0 ? 0 : mean(rs);
}

const rows: Record<string, { spearman: number[]; regret: number[] }> = {};
const add = (k: string, pred: number[], truth: number[]): void => {
  const r = (rows[k] ??= { spearman: [], regret: [] });
  r.spearman.push(spearman(pred, truth));
  r.regret.push(top1Regret(pred, truth));
};
const reliability: number[] = [];
/** Spearman of every two models' accuracies over a task's templates. */
const pairwise: number[] = [];
for (const task of tasks) {
  say(`cross-model: ${task}`);
  const models = byTask.get(task)!;
  const ids = shared(models);
  const names = [...models.keys()];
  for (const target of names) {
    const truth = ids.map((t) => models.get(target)!.get(t)!.acc);
    if (Math.max(...truth) === Math.min(...truth)) continue; // nothing to rank (as the evaluation skips it)
    const others = names.filter((m) => m !== target);
    const accOf = (m: string): number[] => ids.map((t) => models.get(m)!.get(t)!.acc);
    add('mean of the other models on the same templates', ids.map((_, i) => mean(others.map((m) => accOf(m)[i]!))), truth);
    const w = others.map((m) => Math.max(0, agreement(target, m, task)));
    const wsum = w.reduce((a, b) => a + b, 0);
    add("the other models weighted by their agreement with this one on the other tasks", ids.map((_, i) => (wsum === 0 ? 0 : others.reduce((a, m, j) => a + w[j]! * accOf(m)[i]!, 0) / wsum)), truth);
    for (const m of others) if (m > target) pairwise.push(spearman(accOf(m), truth));
    const best = others.map(accOf).reduce((b, x) => (spearman(x, truth) > spearman(b, truth) ? x : b));
    add('the single best other model, chosen in hindsight', best, truth);
    const defaults = ids.filter((t) => models.get(target)!.get(t)!.method === 'default').map((t) => models.get(target)!.get(t)!.acc);
    if (defaults.length > 0) ((rows["the task's default templates (a person's; their mean)"] ??= { spearman: [], regret: [] }).regret.push(Math.max(...truth) - mean(defaults)));
    const n = models.get(target)!.get(ids[0]!)!.n;
    const m = mean(truth);
    const v = truth.reduce((a, x) => a + (x - m) ** 2, 0) / (truth.length - 1);
    const noise = mean(truth.map((x) => (x * (1 - x)) / n));
    if (v > 0) reliability.push(Math.max(0, (v - noise) / v));
  }
}

const out: string[] = [
  `What data/multiprompt allows (${tasks.length} tasks, ${Object.values(rows)[0]!.spearman.length} (task, model) groups)`,
  '',
  '| predictor of a template\'s accuracy for one model, within one task | Spearman, mean | top-1 regret, mean |',
  '|---|---:|---:|',
  ...Object.entries(rows).map(([k, r]) => `| ${k} | ${k.startsWith("the task's default") ? '—' : mean(r.spearman).toFixed(3)} | ${mean(r.regret).toFixed(3)} |`),
  '',
  `Share of a group's accuracy variance over templates that is not binomial noise: ${mean(reliability).toFixed(3)} (mean over groups).`,
  `Two models' agreement on a task's templates: Spearman ${mean(pairwise).toFixed(3)} (mean over every pair of models of every task).`,
  (() => {
    const models = tasks.map((t) => byTask.get(t)!.size);
    const executions = tasks.map((t) => [...byTask.get(t)!.values()].reduce((a, m) => a + [...m.values()].reduce((b, c) => b + c.n, 0), 0));
    return `Models a task: ${Math.min(...models)}–${Math.max(...models)}; executions behind a task's accuracies: ${Math.min(...executions).toLocaleString('en-US')}–${Math.max(...executions).toLocaleString('en-US')}.`;
  })(),
  '',
  '| k paraphrases tried, drawn at random, the best of them served without error | last-100 regret, median | mean |',
  '|---:|---:|---:|',
];
const groups = new Map<string, number[]>();
for (const c of cells) (groups.get(`${c.task}\u0000${c.model}`) ?? groups.set(`${c.task}\u0000${c.model}`, []).get(`${c.task}\u0000${c.model}`)!).push(c.acc);
const rnd = seededRandom(27);
for (const k of [10, 20, 30, 40, 60]) {
  say(`pool: k = ${k}`);
  const regrets = [...groups.values()].map((accs) => {
    const best = Math.max(...accs);
    let sum = 0;
    const draws = 200;
    for (let d = 0; d < draws; d++) {
      const a = [...accs];
      for (let i = a.length - 1; i > a.length - 1 - k && i > 0; i--) {
        const j = Math.floor(rnd() * (i + 1));
        [a[i], a[j]] = [a[j]!, a[i]!];
      }
      sum += best - Math.max(...a.slice(Math.max(0, a.length - k)));
    }
    return sum / draws;
  });
  out.push(`| ${k} | ${median(regrets).toFixed(3)} | ${mean(regrets).toFixed(3)} |`);
}
const sizes = [...groups.values()].map((a) => a.length);
out.push('', `Paraphrases in a group's pool: median ${median(sizes)}, ${Math.min(...sizes)}–${Math.max(...sizes)}.`);
process.stdout.write(`${out.join('\n')}\n`);
