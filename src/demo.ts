/**
 * `npm run demo`: the main job on the embedded default — no NATS, no
 * PostgreSQL server (PGlite under .data/demo), the offline proposer and the
 * shipped scorer. Everything goes through the same op table the Port and
 * NATS serve, so what it prints is what an Elixir caller would get.
 *
 *   1. assemble a SPARC prompt from the shipped templates
 *   2. the closed loop on one task the shipped model has never seen: choose_prompt →
 *      outcome drawn from the served prompt's measured accuracy → track_execution,
 *      1,000 rounds per model, against always serving the original
 *   3. track executions of real prompts (multiprompt data) and print their aggregates
 *   4. train a scorer on that history (promoted only when no worse)
 *   5. rank prompts it has never seen, against their real accuracy
 *   6. optimize a prompt with COPRO (offline proposer, learned evaluator)
 *   7. pick an A/B variant by Thompson sampling over the tracked outcomes
 *
 * Results go to stdout; progress to stderr. The dashboard (docs/dashboard.md) is served on
 * 127.0.0.1:4050 (or a free port) while the demo runs: the closed loop's experiments (from the
 * loop's engine) and the tracked prompts, models and health of the demo's engine. The demo ends
 * by saying where it is; `npm run demo -- --dashboard` keeps it open until Ctrl-C.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ErlFloat, float, record, type Term, type TermObject } from './codec/terms.js';
import { envWith, loadConfig, REPO_ROOT } from './config.js';
import { createEngine } from './services.js';
import { accuracyOf, groupsOf, loadTasks } from './learning/offline/loopSim/world.js';
import { startFakeParaphraser } from './learning/offline/loopSim/fakeParaphraser.js';
import { hashSeed, seededRandom } from './random.js';
import { createLogger } from './log.js';
import { createOpTable, type OpResult } from './ops/index.js';
import { isHistory } from './learning/offline/evaluation.js';
import { cellToEntry, loadCells, promptIdOfTemplate } from './learning/offline/multiprompt.js';
import { fromJson } from './codec/json.js';
import { startDashboard, type DashboardHandle } from './dashboard/server.js';
import type { AppEngine } from './services.js';

const out = (s = ''): void => void process.stdout.write(`${s}\n`);
const progress = (s: string): void => void process.stderr.write(`[demo] ${s}\n`);
const num = (t: Term | undefined): number => (t instanceof ErlFloat ? t.value : typeof t === 'number' ? t : NaN);
const indent = (s: string, by = '    '): string => s.split('\n').map((l) => by + l).join('\n');
const oneLine = (s: string, n: number): string => (s.replace(/\s+/g, ' ').length > n ? `${s.replace(/\s+/g, ' ').slice(0, n - 1)}…` : s.replace(/\s+/g, ' '));

async function main(): Promise<void> {
  const dataDir = path.join(REPO_ROOT, '.data', 'demo');
  // A fresh store each run, so the figures are the same every time (keep it with --keep).
  if (!process.argv.includes('--keep')) fs.rmSync(dataDir, { recursive: true, force: true });
  const config = loadConfig(envWith({ DATABASE_URL: '', NATS_URL: '' }), { dataDir }, { logLevel: 'warn' });
  const engine = createEngine(config, createLogger(config.logLevel));
  const table = createOpTable();
  const signal = new AbortController().signal;
  const call = async (op: string, args: TermObject): Promise<TermObject> => {
    const r: OpResult = await table.dispatch(op, args, { signal, engine, log: engine.log, transport: 'local' });
    if (!r.ok) throw new Error(`${op}: {${r.reason}, ${r.message}}`);
    return r.value as TermObject;
  };
  const has = (op: string): boolean => table.has(op);

  // The dashboard: the loop's experiments from its engine, everything else from this one.
  const loopRef: { engine?: AppEngine } = {};
  const dashboard = await demoDashboard((op, args) => {
    const e = loopRef.engine !== undefined && (op === 'experiment' || op === 'describe') ? loopRef.engine : engine;
    return table.dispatch(op, fromJson(args), { signal, engine: e, log: e.log, transport: 'dashboard' });
  }, engine.log);
  if (dashboard !== undefined) progress(`dashboard: ${dashboard.url}/ (live while the demo runs)`);

  out('# prompt-engine demo (embedded: PGlite, shipped scorer; offline proposer, and a stand-in paraphrasing LLM for the closed loop)');
  out(`data dir: ${path.relative(process.cwd(), dataDir) || dataDir}`);

  // 1. assemble
  let prompt = 'Write the specification for a {{language}} service that {{context}}.';
  if (has('get_sparc_prompt')) {
    progress('assembling a SPARC specification prompt from templates_data/');
    const r = await call('get_sparc_prompt', record({ name: 'specification', variables: record({ language: 'elixir', framework: 'phoenix', domain: 'billing', context: 'issues invoices and retries failed payments' }) }));
    prompt = String(r.prompt);
    out('\n## 1. SPARC prompt assembled from shipped templates');
    out(indent(prompt.split('\n').slice(0, 12).join('\n')));
    if (prompt.split('\n').length > 12) out(`    … (${prompt.split('\n').length} lines)`);
  }

  const loop = await closedLoop(path.join(dataDir, 'loop'), loopRef);

  // 2. track real history (multiprompt: each cell is one entry standing for its n executions)
  const task = 'sports_understanding';
  const model = 'vicuna-13b';
  const cells = loadCells(undefined, [task, 'hyperbaton', 'causal_judgement']);
  const history = cells.filter((c) => isHistory(c.templateId));
  progress(`tracking the measured accuracies of ${history.length} (template, model) cells of 3 BBH tasks as executions (the history half of their templates)`);
  const t0 = Date.now();
  const ids = await Promise.all(history.map((c) => call('track_execution', record(cellToEntry(c) as Record<string, Term>))));
  out(`\n## 3. Tracked ${ids.length} entries (${history.reduce((n, c) => n + c.n, 0).toLocaleString('en-US')} executions) in the embedded store in ${Date.now() - t0} ms`);
  const top = await call('query', record({ kind: 'high_performance', threshold: float(0.6), min_count: 5, limit: 5 }));
  out('top prompts by tracked success rate (query high_performance):');
  for (const r of top.rows as TermObject[]) {
    const text = history.find((c) => promptIdOfTemplate(c.template) === r.prompt_id)?.template ?? '';
    out(`  ${String(r.prompt_id)}  n=${String(r.count)}  success ${(num(r.success_rate) * 100).toFixed(1)}%  "${oneLine(text, 70)}"`);
  }

  // 3. learn from it
  progress('training a scorer on the tracked history (worker thread)');
  const trained = await call('train', record({ min_samples: 50, epochs: 12 }));
  const m = trained.metrics as TermObject;
  const sm = trained.serving_metrics as TermObject | null;
  out(`\n## 4. Trained ${String(trained.model_version)} on ${String(trained.samples)} examples in ${String(trained.duration_ms)} ms`);
  out(`held-out: AUC ${num(m.auc).toFixed(3)}, log-loss ${num(m.log_loss).toFixed(4)}, calibration error ${num(m.ece).toFixed(3)}, Spearman ${num(m.spearman).toFixed(3)}`);
  if (sm) out(`serving model on the same split: log-loss ${num(sm.log_loss).toFixed(4)} → ${trained.promoted ? 'promoted (no worse)' : 'kept the serving model (the new one is worse on this split)'}`);

  // 4. rank prompts it has never seen, against their real accuracy
  const unseen = cells.filter((c) => c.task === task && c.model === model && !isHistory(c.templateId));
  const scored = await call('score', record({ prompts: unseen.map((c) => c.template), context: record({ model, task }) }));
  const ranked = unseen.map((c, i) => ({ c, p: num((scored.scores as Term[])[i]) })).sort((a, b) => b.p - a.p);
  const best = Math.max(...unseen.map((c) => c.acc));
  const mean = unseen.reduce((s, c) => s + c.acc, 0) / unseen.length;
  out(`\n## 5. Ranking ${unseen.length} unseen ${task} prompts for ${model} (model ${String(scored.model_version)})`);
  for (const { c, p } of ranked.slice(0, 3)) out(`  predicted ${p.toFixed(3)}  real accuracy ${c.acc.toFixed(2)}  "${oneLine(c.template, 60)}"`);
  out(`top-1 pick: real accuracy ${ranked[0]!.c.acc.toFixed(2)} (best possible ${best.toFixed(2)}, a random pick averages ${mean.toFixed(2)})`);

  // 5. optimize with what it learned
  progress('optimizing with COPRO (offline proposer, learned evaluator + tracked outcomes)');
  const base = history.find((c) => c.task === task && c.method === 'default')?.template ?? unseen[0]!.template;
  const opt = await call('optimize_prompt', record({ prompt: base, context: record({ task, model }), breadth: 6, depth: 2 }));
  out('\n## 6. COPRO optimization');
  out(`original (score ${num((opt.candidates as TermObject[]).find((c) => c.prompt === base)?.score).toFixed(3)}):`);
  out(indent(base));
  out(`optimized (score ${num(opt.optimization_score).toFixed(3)}, confidence ${num(opt.confidence).toFixed(2)}, model ${String(opt.model_version)}):`);
  out(indent(String(opt.optimized_prompt)));
  out(`summary: ${String(opt.improvement_summary)}`);
  const evo = await call('query', record({ kind: 'evolution_history', prompt_id: String(opt.prompt_id) }));
  out(`recorded as a PromptEvolutionEntry: ${(evo.rows as TermObject[]).length} row(s) for ${String(opt.prompt_id)}`);

  // 6. A/B choice from tracked outcomes
  const [a, b] = (top.rows as TermObject[]).slice(0, 2).map((r) => String(r.prompt_id));
  if (a && b) {
    const pick = await call('select_variant', record({ test_id: 'demo-ab', variants: [a, b] }));
    out(`\n## 7. select_variant (Thompson sampling over tracked outcomes): ${String(pick.variant)}`);
  }

  if (dashboard !== undefined) {
    out('\n## The dashboard');
    if (process.argv.includes('--dashboard')) {
      out(`open ${dashboard.url}/ : the closed loop's experiments, tracked prompts, models, health (Ctrl-C stops it)`);
      await new Promise<void>((r) => process.once('SIGINT', () => r()));
    } else {
      out(`it was at ${dashboard.url}/ while the demo ran; \`npm run demo -- --dashboard\` keeps it open (docs/dashboard.md)`);
    }
    await dashboard.close();
  }
  await loop.close();
  engine.log.flush?.();
  await engine.close();
  progress('done');
}

/** The dashboard on 127.0.0.1:4050, or any free port when that one is taken; undefined when none can listen. */
async function demoDashboard(call: Parameters<typeof startDashboard>[0]['call'], log: AppEngine['log']): Promise<DashboardHandle | undefined> {
  for (const port of [4050, 0]) {
    try {
      return await startDashboard({ address: { host: '127.0.0.1', port }, call, log });
    } catch (err) {
      if (port === 0) progress(`no dashboard: ${(err as Error).message}`);
    }
  }
  return undefined;
}

type Call = (op: string, args: TermObject) => Promise<TermObject>;

/**
 * The closed loop on sports_understanding (left out of the shipped model's
 * training). Proposals come from a stand-in LLM on loopback that answers with
 * the dataset's paraphrases of the task (no LLM runs here, and the offline
 * proposer's edits have no measured accuracy in this data); each outcome is
 * drawn from the served paraphrase's measured accuracy for that model, which
 * the engine never sees.
 */
async function closedLoop(dataDir: string, ref: { engine?: AppEngine }): Promise<{ close(): Promise<void> }> {
  const tasks = loadTasks();
  const task = tasks.find((t) => t.name === 'sports_understanding')!;
  const llm = await startFakeParaphraser([task]);
  // A simulation runs its 1,000 rounds in a second or two, faster than a first proposal batch is embedded and
  // screened (the embedding model loads in seconds): each choice waits for a batch under way, as bench:loop's
  // do, so the demo replays the same way on any machine. A real app's traffic is served meanwhile instead.
  const config = loadConfig(envWith({ DATABASE_URL: '', NATS_URL: '', PROMPT_ENGINE_RETRAIN_EVERY: '0', PROMPT_ENGINE_LOOP_AWAIT_PROPOSALS: '1' }), { dataDir, llmUrl: llm.url }, { logLevel: 'warn' });
  const engine = createEngine(config, createLogger(config.logLevel));
  ref.engine = engine;
  const table = createOpTable();
  const signal = new AbortController().signal;
  const call: Call = async (op, args) => {
    const r = await table.dispatch(op, args, { signal, engine, log: engine.log, transport: 'local' });
    if (!r.ok) throw new Error(`${op}: {${r.reason}, ${r.message}}`);
    return r.value as TermObject;
  };
  const ROUNDS = 1000;
  out('\n## 2. The closed loop: sports_understanding, 1,000 rounds per model, nothing but choose_prompt and track_execution');
  out(`base prompt: "${oneLine(task.base.text, 90)}"`);
  const rows: string[] = [];
  let chart: string[] = [];
  for (const g of groupsOf(task)) {
    progress(`closed loop: ${g.model}`);
    const rnd = seededRandom(hashSeed(`demo|${g.model}`));
    const served: number[] = [];
    const leaderAcc: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const c = await call('choose_prompt', record({ experiment: task.name, prompt: task.base.text, context: record({ model: g.model }) }));
      const acc = accuracyOf(g, String(c.prompt));
      served.push(acc);
      await call('track_execution', record({ prompt_id: String(c.prompt_id), success: rnd() < acc, execution_time_ms: 0, metadata: c.metadata! }));
      if ((r + 1) % 100 === 0) {
        const e = ((await call('experiment', record({ experiment: task.name, model: g.model }))).experiments as TermObject[])[0]!;
        const leader = [...(e.variants as TermObject[])].find((v) => v.prompt_id === (e.leader as TermObject).prompt_id)!;
        leaderAcc.push(accuracyOf(g, String(leader.text)));
      }
    }
    const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
    rows.push(`| ${g.model} | ${g.baseAcc.toFixed(2)} | ${mean(served).toFixed(3)} | ${mean(served.slice(-100)).toFixed(3)} | ${leaderAcc.at(-1)!.toFixed(2)} | ${g.bestAcc.toFixed(2)} |`);
    if (g.model === 'airoboros-13b') {
      const bar = (x: number): string => '█'.repeat(Math.round(x * 40)).padEnd(40, '·');
      chart = [`${g.model}: mean measured accuracy of what was served, per 100 rounds (the original alone: ${g.baseAcc.toFixed(2)})`];
      for (let k = 0; k < ROUNDS / 100; k++) {
        const block = served.slice(k * 100, (k + 1) * 100);
        chart.push(`  rounds ${String(k * 100 + 1).padStart(4)}–${String((k + 1) * 100).padEnd(4)} ${bar(mean(block))} ${mean(block).toFixed(2)}  leader ${leaderAcc[k]!.toFixed(2)}`);
      }
      chart.push(`${'  original'.padEnd(19)}${bar(g.baseAcc)} ${g.baseAcc.toFixed(2)}`);
    }
  }
  for (const l of chart) out(l);
  out('\nevery model of the task (accuracies are the dataset\'s measurements; the engine only saw its own Bernoulli outcomes):');
  out('| model | original | served, mean of 1,000 rounds | served, last 100 | leader after 1,000 | best paraphrase in the data |');
  out('|---|---:|---:|---:|---:|---:|');
  for (const r of rows) out(r);
  out('(all 20 tasks, leave-tasks-out scorers and baselines: `npm run bench:loop`, figures in BENCHMARKS.md)');
  // The loop's engine stays open for the dashboard until the demo ends.
  return {
    close: async () => {
      await engine.close();
      await llm.close();
    },
  };
}

main().catch((err: unknown) => {
  process.stderr.write(`demo failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
