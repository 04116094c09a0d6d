/**
 * The verbs of `prompt-engine` that run the engine in this process (no
 * Port, no NATS): `call`, `health`, `render`, `optimize`, `choose`,
 * `train`, `stats`, `query`, `experiments`, `ops`. Each builds the
 * arguments of one op from its flags, runs it through the same op table
 * the transports serve (so validation and errors are the sidecar's), and
 * prints the reply as a table, or as JSON with `--json`. Exit status: 0
 * ok, 1 the op failed, 2 a usage mistake.
 */
import fs from 'node:fs';
import type { Logger } from 'pino';
import { fromJson, termToJson, type Json } from '../codec/json.js';
import { configFromFlags, type EngineConfig } from '../config.js';
import { createLogger } from '../log.js';
import { createOpTable } from '../ops/index.js';
import { describeOps, opsMarkdown, type ArgDescription } from '../ops/describe.js';
import { createEngine } from '../services.js';
import { withTimeout } from '../timeouts.js';
import { pairs, UsageError, type FlagSpec, type FlagValue, type ParsedArgs, type VerbGrammar } from './args.js';
import { cellText, render, table, type Column } from './table.js';
import { trainProgress } from './progress.js';

type JsonObject = { [k: string]: Json };

export interface Verb extends VerbGrammar {
  run(p: ParsedArgs): Promise<number>;
}

/** Flags every engine verb takes. */
export const ENGINE_FLAGS: readonly FlagSpec[] = [
  { name: 'json', type: 'bool', doc: 'print the reply as JSON (default: a table)' },
  { name: 'data-dir', type: 'string', value: 'DIR', doc: 'PGlite, journal and trained models (default PROMPT_ENGINE_DATA_DIR, else .data/)' },
  { name: 'database-url', type: 'string', value: 'URL', doc: 'PostgreSQL instead of PGlite (default DATABASE_URL)' },
  { name: 'nats', type: 'string', value: 'URL', doc: 'NATS for central_cloud templates (default NATS_URL)' },
  { name: 'log-level', type: 'string', value: 'LEVEL', doc: 'pino level of the logs on stderr (default LOG_LEVEL, else warn)' },
];

interface Session {
  call(op: string, args: Json): Promise<{ ok: true; value: Json } | { ok: false; reason: string; message: string }>;
  log: Logger;
}

/** The configuration of an engine command: its flags over the environment, logging at warn unless asked. */
function commandConfig(p: ParsedArgs): EngineConfig {
  const flags = new Map<string, string | true>();
  for (const [k, v] of p.flags) if (typeof v === 'string') flags.set(k, v);
  // A command's stderr is for people: warnings and worse, unless asked (--log-level, LOG_LEVEL).
  return configFromFlags(flags, undefined, { logLevel: 'warn' });
}

/**
 * For a verb that reads what is tracked: the store must exist. On PGlite a
 * data directory that does not exist (a typo in --data-dir) holds nothing,
 * and opening it would silently create an empty store: refuse instead.
 */
function requireStore(p: ParsedArgs, verb: string): void {
  const config = commandConfig(p);
  if (config.databaseUrl !== undefined || fs.existsSync(config.dataDir)) return;
  throw new UsageError(`the data directory ${config.dataDir} does not exist, so nothing is tracked there (${p.flags.has('data-dir') ? '--data-dir' : 'PROMPT_ENGINE_DATA_DIR, or the default'}); give the directory the sidecar writes to, or --database-url`, verb);
}

/** The engine in this process for one verb; closed (tracking writes flushed) before the verb returns. */
async function withEngine(p: ParsedArgs, f: (s: Session) => Promise<number>, opts: { logDestination?: (line: string) => void; logLevel?: string } = {}): Promise<number> {
  const config = commandConfig(p);
  const log = createLogger(opts.logLevel ?? config.logLevel, 'prompt-engine', opts.logDestination);
  const engine = createEngine(config, log);
  const table = createOpTable();
  const abort = new AbortController();
  const onSigint = (): void => abort.abort();
  process.once('SIGINT', onSigint);
  try {
    return await f({
      log,
      call: async (op, args) => {
        const r = await table.dispatch(op, fromJson(args), { signal: abort.signal, engine, log, transport: 'cli' });
        return r.ok ? { ok: true, value: termToJson(r.value) } : r;
      },
    });
  } finally {
    process.off('SIGINT', onSigint);
    await withTimeout(engine.close(), 5_000).catch((err: unknown) => log.error({ err }, 'engine close failed'));
  }
}

const width = (): number => process.stdout.columns ?? 120;

/** Print a reply (JSON with --json, else the verb's layout) or its error; the exit status. */
/** What one verb asks of runOp: the op to call and how to show its reply. */
interface OpRun {
  verb: string;
  op: string;
  args: Json;
  /** The reply as a person reads it (`--json` prints it as JSON instead). */
  human: (v: Json) => string;
  /** How the engine is opened (log level and destination). */
  engine?: Parameters<typeof withEngine>[2];
  /** Runs first; what it returns runs once the op is done (progress bars). */
  before?: (s: Session) => Promise<(() => void) | void>;
  /** The exit status of a successful reply (default 0). */
  exitOf?: (v: Json) => number;
}

async function runOp(p: ParsedArgs, { verb, op, args, human, engine = {}, before, exitOf = () => 0 }: OpRun): Promise<number> {
  return withEngine(
    p,
    async (s) => {
      const stop = await before?.(s);
      const r = await s.call(op, args).finally(() => stop?.());
      if (!r.ok) {
        if (p.flags.has('json')) process.stdout.write(`${JSON.stringify({ error: { reason: r.reason, message: r.message } }, null, 2)}\n`);
        process.stderr.write(`prompt-engine ${verb}: ${r.reason}: ${r.message}\n`);
        return 1;
      }
      process.stdout.write(p.flags.has('json') ? `${JSON.stringify(r.value, null, 2)}\n` : human(r.value));
      return exitOf(r.value);
    },
    engine,
  );
}

const str = (p: ParsedArgs, k: string): string | undefined => p.flags.get(k) as string | undefined;
const num = (p: ParsedArgs, k: string): number | undefined => p.flags.get(k) as number | undefined;

/** Only the keys that were given: absent flags leave the op's defaults. */
function given(o: Record<string, Json | FlagValue | undefined>): JsonObject {
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v as Json;
  return out;
}

function jsonArg(text: string, what: string): Json {
  const src = text === '-' ? fs.readFileSync(0, 'utf8') : text;
  try {
    return JSON.parse(src) as Json;
  } catch (err) {
    throw new UsageError(`${what}: not JSON (${(err as Error).message})`);
  }
}

/** The op table, for the flags derived from its argument specs. */
const OPS = createOpTable();

/**
 * A flag for an op's typed argument, derived from its spec: the type, the
 * doc, the bounds and the default are the op's (so no limit is written
 * here again). A boolean that defaults to true becomes `--no-<arg>`.
 */
function argFlag(op: string, arg: string, o: { name?: string; value?: string } = {}): FlagSpec {
  const spec = OPS.specs.find((s) => s.name === op)?.args[arg];
  if (spec?.shape === undefined) throw new Error(`${op}.${arg} has no typed spec to make a flag from`);
  const kind = spec.shape.kind;
  if (kind === 'boolean') return spec.default === true ? { name: o.name ?? `no-${arg.replace(/_/g, '-')}`, type: 'bool', doc: `${arg}: false (default true: ${spec.doc})` } : { name: o.name ?? arg.replace(/_/g, '-'), type: 'bool', doc: spec.doc };
  const type = kind === 'integer' ? 'int' : kind === 'number' ? 'number' : 'string';
  const dflt = spec.default === undefined ? '' : `; default ${JSON.stringify(spec.default)}`;
  return { name: o.name ?? arg.replace(/_/g, '-'), type, value: o.value ?? (type === 'int' ? 'N' : type === 'number' ? 'X' : arg.toUpperCase()), doc: `${spec.doc} (${spec.type}${dflt})` };
}

/** An op argument's default, as its spec declares it. */
const argDefault = (op: string, arg: string): Json | undefined => OPS.specs.find((s) => s.name === op)?.args[arg]?.default;

const asObject = (v: Json): JsonObject => (v !== null && typeof v === 'object' && !Array.isArray(v) ? v : {});
const rowsOf = (v: Json, k: string): JsonObject[] => ((asObject(v)[k] as Json[] | undefined) ?? []).map(asObject);
const pct = (v: Json | undefined): string => (typeof v === 'number' ? `${(v * 100).toFixed(1)}%` : '');
const VARS: FlagSpec = { name: 'var', type: 'list', value: 'KEY=VALUE', doc: 'a template variable' };
const CONTEXT: FlagSpec = { name: 'context', type: 'list', value: 'KEY=VALUE', doc: 'a context entry (model, task, language, ...)' };
const OBJECTIVE: FlagSpec = {
  name: 'objective',
  type: 'list',
  value: 'KEY=VALUE',
  doc: "an objective key (kind=success|score|reward, cost_weight, input_token_cost, output_token_cost, max_latency_ms_p90, max_cost_per_call: the op's objective map, docs/ops.md); repeat for each",
};

/** `--objective k=v` pairs as the op's objective map: numbers as numbers; the op validates the keys and names a wrong one. */
function objectiveArg(p: ParsedArgs): Record<string, string | number> | undefined {
  const kv = pairs(p.flags.get('objective'), 'objective');
  if (Object.keys(kv).length === 0) return undefined;
  return Object.fromEntries(Object.entries(kv).map(([k, v]) => [k, v.trim() !== '' && Number.isFinite(Number(v)) ? Number(v) : v]));
}

/** An objective in one line: its kind, then every weight and constraint it sets. */
function objectiveText(o: Record<string, Json>): string {
  const set = Object.entries(o).filter(([k, v]) => k !== 'kind' && v !== null && v !== 0);
  return `${String(o.kind ?? 'success')}${set.length === 0 ? '' : ` (${set.map(([k, v]) => `${k} ${String(v)}`).join(', ')})`}`;
}

/** A value under an experiment's objective: a rate as a percentage, a reward as a number. */
const valueText = (objective: Json | undefined, v: Json | undefined): string =>
  typeof v !== 'number' ? '' : asObject(objective ?? null).kind === 'reward' ? v.toFixed(3) : pct(v);

/** Prompt-bearing replies: the fields as lines, then the prompt itself as a block. */
function promptReply(v: Json, promptKey: string): string {
  const o = { ...asObject(v) };
  const prompt = o[promptKey];
  delete o[promptKey];
  for (const k of Object.keys(o)) if (typeof o[k] === 'object' && o[k] !== null) delete o[k];
  return `${render(o, width())}\n${typeof prompt === 'string' ? prompt : ''}\n`;
}

const call: Verb = {
  name: 'call',
  summary: 'run any op with a JSON map of arguments (docs/ops.md lists them; `prompt-engine ops <op>` too)',
  positionals: [
    { name: 'op', doc: 'the op', required: true },
    { name: 'json', doc: "its arguments as a JSON object ('-' reads stdin; default {})" },
  ],
  flags: ENGINE_FLAGS,
  examples: ["prompt-engine call health --json", "prompt-engine call query '{\"kind\": \"high_performance\", \"threshold\": 0.8}'"],
  run: (p) => runOp(p, { verb: 'call', op: p.positionals[0]!, args: p.positionals[1] === undefined ? {} : jsonArg(p.positionals[1], 'json'), human: (v) => render(v, width()) }),
};

const health: Verb = {
  name: 'health',
  summary: 'the engine\'s status here: "ok", or "degraded" with the reasons (database, NATS); exit status 1 when degraded',
  positionals: [],
  flags: ENGINE_FLAGS,
  // Like pg_isready and container health checks: anything but "ok" is a non-zero exit.
  run: (p) => runOp(p, { verb: 'health', op: 'health', args: {}, human: (v) => render(v, width()), exitOf: (v) => ((v as { status?: unknown }).status === 'ok' ? 0 : 1) }),
};

const renderVerb: Verb = {
  name: 'render',
  summary: 'render a template with variables (render_template)',
  positionals: [{ name: 'template', doc: 'the template name (prompt-engine call list_templates shows them)', required: true }],
  flags: [VARS, { name: 'vars', type: 'string', value: 'JSON', doc: 'the variables as a JSON object (--var wins per key)' }, argFlag('render_template', 'strict'), ...ENGINE_FLAGS],
  examples: ['prompt-engine render sparc_specification --var language=elixir --var domain=payments --var context="a rate limiter per API key"'],
  run: (p) => {
    const vars = { ...asObject(str(p, 'vars') === undefined ? {} : jsonArg(str(p, 'vars')!, '--vars')), ...pairs(p.flags.get('var'), 'var') };
    return runOp(p, { verb: 'render', op: 'render_template', args: given({ template_id: p.positionals[0], variables: vars, strict: p.flags.has('no-strict') ? false : undefined }), human: (v) => promptReply(v, 'prompt') });
  },
};

const optimize: Verb = {
  name: 'optimize',
  summary: 'improve a prompt with COPRO (optimize_prompt): offline proposer and the learned scorer unless an LLM is configured',
  positionals: [{ name: 'prompt', doc: "the prompt ('-' reads stdin)", required: true }],
  flags: [
    argFlag('optimize_prompt', 'breadth'),
    argFlag('optimize_prompt', 'depth'),
    argFlag('optimize_prompt', 'temperature'),
    argFlag('optimize_prompt', 'language', { value: 'LANG' }),
    CONTEXT,
    argFlag('optimize_prompt', 'budget'),
    { name: 'llm-url', type: 'string', value: 'URL', doc: 'an OpenAI-compatible endpoint (default LLM_URL)' },
    argFlag('optimize_prompt', 'cache'),
    ...ENGINE_FLAGS,
  ],
  examples: ['prompt-engine optimize "Write a function that parses the input." --language elixir --breadth 4 --depth 1'],
  run: (p) => {
    const prompt = p.positionals[0] === '-' ? fs.readFileSync(0, 'utf8') : p.positionals[0]!;
    const context = pairs(p.flags.get('context'), 'context');
    const args = given({
      prompt,
      context: Object.keys(context).length > 0 ? context : undefined,
      language: str(p, 'language'),
      breadth: num(p, 'breadth'),
      depth: num(p, 'depth'),
      temperature: num(p, 'temperature'),
      budget: num(p, 'budget'),
      llm: str(p, 'llm-url') === undefined ? undefined : { url: str(p, 'llm-url')! },
      cache: p.flags.has('no-cache') ? false : undefined,
    });
    return runOp(p, { verb: 'optimize', op: 'optimize_prompt', args, human: (v) => {
      const o = asObject(v);
      const cands = rowsOf(v, 'candidates');
      return `${render(given({ improvement: o.improvement_summary, score: o.optimization_score, confidence: o.confidence, model_version: o.model_version, cached: o.cached }), width())}\ncandidates:\n${table(cands, [{ key: 'round' }, { key: 'score' }, { key: 'prompt', max: 200 }], width())}\noptimized prompt:\n${String(o.optimized_prompt ?? '')}\n`;
    } });
  },
};

const choose: Verb = {
  name: 'choose',
  summary: 'the prompt to use now for an experiment and model (choose_prompt, the closed loop)',
  positionals: [
    { name: 'experiment', doc: 'the experiment', required: true },
    { name: 'prompt', doc: 'the base prompt (or give --template)' },
  ],
  flags: [
    { name: 'model', type: 'string', value: 'MODEL', doc: 'the model the prompt will run on' },
    { name: 'template', type: 'string', value: 'NAME', doc: 'render this template as the base prompt' },
    VARS,
    CONTEXT,
    OBJECTIVE,
    ...ENGINE_FLAGS,
  ],
  examples: ['prompt-engine choose ticket_triage "Classify the ticket." --model gpt-4o-mini', 'prompt-engine choose support_reply "Answer the customer." --objective kind=reward --objective cost_weight=1 --objective input_token_cost=0.00001'],
  run: (p) => {
    if (p.positionals[1] === undefined && str(p, 'template') === undefined) throw new UsageError('give the base <prompt> or --template', 'choose');
    const vars = pairs(p.flags.get('var'), 'var');
    const context = pairs(p.flags.get('context'), 'context');
    const args = given({
      experiment: p.positionals[0],
      prompt: p.positionals[1],
      template_id: str(p, 'template'),
      variables: Object.keys(vars).length > 0 ? vars : undefined,
      context: Object.keys(context).length > 0 ? context : undefined,
      model: str(p, 'model'),
      objective: objectiveArg(p),
    });
    return runOp(p, { verb: 'choose', op: 'choose_prompt', args, human: (v) => promptReply(v, 'prompt') });
  },
};

const train: Verb = {
  name: 'train',
  summary: 'train a scorer on the tracked history (train); promoted only when no worse on the held-out split. Progress on stderr',
  positionals: [],
  flags: [
    argFlag('train', 'min_samples'),
    argFlag('train', 'epochs'),
    argFlag('train', 'holdout'),
    argFlag('train', 'seed'),
    ...ENGINE_FLAGS,
  ],
  examples: ['prompt-engine train --epochs 10 --database-url postgres://localhost/prompts'],
  run: (p) => {
    requireStore(p, 'train');
    const epochs = num(p, 'epochs') ?? (argDefault('train', 'epochs') as number);
    const progress = trainProgress(epochs, process.stderr);
    const args = given({ min_samples: num(p, 'min-samples'), epochs: num(p, 'epochs'), holdout: num(p, 'holdout'), seed: num(p, 'seed') });
    const human = (v: Json): string => {
      const o = asObject(v);
      const m = asObject(o.metrics ?? null);
      const sm = asObject(o.serving_metrics ?? null);
      const metricRows = Object.keys(m).map((k) => ({ metric: k, trained: m[k]!, serving: sm[k] ?? null }));
      return `${render(given({ model_version: o.model_version, previous_version: o.previous_version, promoted: o.promoted, serving_version: o.serving_version, samples: o.samples, epochs: o.epochs, duration_ms: o.duration_ms }), width())}\n${table(metricRows, [{ key: 'metric' }, { key: 'trained', label: `new: ${cellText(o.model_version)}` }, { key: 'serving', label: `previous: ${cellText(o.previous_version)}` }], width())}`;
    };
    // Epochs are read from the trainer's structured log records (level info), so the logger runs at
    // info at least and this destination passes on only what the chosen level would have shown.
    const shown = levelValue(commandConfig(p).logLevel);
    return runOp(p, {
      verb: 'train',
      op: 'train',
      args,
      human,
      engine: {
        logLevel: shown < levelValue('info') ? commandConfig(p).logLevel : 'info',
        logDestination: (line) => {
          if (progress.fromLog(line)) return;
          const lvl = /"level":(\d+)/.exec(line);
          if (lvl !== null && Number(lvl[1]) >= shown) process.stderr.write(line.endsWith('\n') ? line : `${line}\n`);
        },
      },
      before: async () => progress.start(),
    });
  },
};

function levelValue(name: string): number {
  return ({ trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity } as Record<string, number>)[name] ?? 40;
}

const stats: Verb = {
  name: 'stats',
  summary: "per-prompt figures from the tracking store (prompt_stats); without ids, the store's own: prompts and executions tracked, success rate, experiments, journal depth, the most used prompts",
  positionals: [{ name: 'prompt_id', doc: 'prompts to report on', variadic: true }],
  flags: ENGINE_FLAGS,
  examples: ['prompt-engine stats p-1 p-2', 'prompt-engine stats --json'],
  run: async (p) => {
    requireStore(p, 'stats');
    if (p.positionals.length > 0)
      return runOp(p, { verb: 'stats', op: 'prompt_stats', args: { prompt_ids: p.positionals }, human: (v) =>
        table(rowsOf(v, 'prompts'), [{ key: 'prompt_id' }, { key: 'count' }, { key: 'successes' }, { key: 'success_rate', label: 'success', format: pct }, { key: 'mean_confidence', label: 'confidence' }, { key: 'p50_ms' }, { key: 'p95_ms' }], width()),
      });
    // The store's figures, not this process's own counters (a command's process has served nothing):
    // what is tracked, per prompt and in all, and what waits in the journal.
    return withEngine(p, async (s) => {
      // The query opens the store first, so `stats` has the store's backend and journal.
      const perPrompt = await s.call('query', { kind: 'high_performance', threshold: 0, min_count: 1, limit: 10_000 });
      const [state, exps] = await Promise.all([s.call('stats', {}), s.call('experiment', {})]);
      for (const r of [perPrompt, state, exps])
        if (!r.ok) {
          process.stderr.write(`prompt-engine stats: ${r.reason}: ${r.message}\n`);
          return 1;
        }
      const prompts = rowsOf((perPrompt as { value: Json }).value, 'rows');
      const store = asObject(asObject(asObject((state as { value: Json }).value).services ?? null).store ?? null);
      const executions = prompts.reduce((n, r) => n + Number(r.count ?? 0), 0);
      const successes = prompts.reduce((n, r) => n + Number(r.successes ?? 0), 0);
      const figures: JsonObject = {
        backend: store.backend ?? null,
        journal_depth: store.journal_depth ?? 0,
        prompts: prompts.length,
        executions,
        successes,
        success_rate: executions === 0 ? 0 : successes / executions,
        experiments: rowsOf((exps as { value: Json }).value, 'experiments').length,
      };
      const top = [...prompts].sort((a, b) => Number(b.count) - Number(a.count)).slice(0, 20);
      if (p.flags.has('json')) process.stdout.write(`${JSON.stringify({ store: figures, prompts: top }, null, 2)}\n`);
      else
        process.stdout.write(
          `${render({ ...figures, success_rate: pct(figures.success_rate) }, width())}\n${top.length === 0 ? 'no executions tracked\n' : table(top, [{ key: 'prompt_id' }, { key: 'count' }, { key: 'successes' }, { key: 'success_rate', label: 'success', format: pct }, { key: 'p50_ms' }, { key: 'p95_ms' }], width())}`,
        );
      return 0;
    });
  },
};

const query: Verb = {
  name: 'query',
  summary: 'query the tracking store (query): by_id, similar, by_tech_stack, prompt_executions, recent_feedback, evolution_history, high_performance',
  positionals: [{ name: 'kind', doc: 'which query', required: true }],
  flags: [
    { name: 'prompt-id', type: 'string', value: 'ID', doc: 'prompt_executions, evolution_history, recent_feedback' },
    { name: 'id', type: 'string', value: 'UUID', doc: 'by_id' },
    { name: 'tech-stack', type: 'list', value: 'TECH', doc: 'by_tech_stack, similar' },
    { name: 'project-type', type: 'string', value: 'TYPE', doc: 'similar' },
    { name: 'duration', type: 'string', value: 'SPAN', doc: 'recent_feedback window: 90s, 30m, 24h, 7d' },
    { name: 'threshold', type: 'number', value: 'X', doc: 'high_performance: minimum success rate' },
    { name: 'min-count', type: 'int', value: 'N', doc: 'high_performance: minimum executions' },
    { name: 'limit', type: 'int', value: 'N', doc: 'at most this many rows (default 100)' },
    ...ENGINE_FLAGS,
  ],
  examples: ['prompt-engine query high_performance --threshold 0.8 --min-count 10', 'prompt-engine query prompt_executions --prompt-id p-1 --limit 5'],
  run: (p) => {
    requireStore(p, 'query');
    const args = given({
      kind: p.positionals[0],
      prompt_id: str(p, 'prompt-id'),
      id: str(p, 'id'),
      project_tech_stack: p.flags.get('tech-stack'),
      project_type: str(p, 'project-type'),
      duration: str(p, 'duration'),
      threshold: num(p, 'threshold'),
      min_count: num(p, 'min-count'),
      limit: num(p, 'limit'),
    });
    return runOp(p, { verb: 'query', op: 'query', args, human: (v) => {
      const rows = rowsOf(v, 'rows');
      const cols: Column[] = [...new Set(rows.flatMap((r) => Object.keys(r)))].filter((k) => k !== 'seq').map((key) => ({ key, max: 40 }));
      return table(rows, cols, width());
    } });
  },
};

const experiments: Verb = {
  name: 'experiments',
  summary: "the closed loop's state: every experiment, or one with its variants, each judged by the experiment's objective (experiment); --action pins, resets, stops, resumes or sets a new objective",
  positionals: [{ name: 'experiment', doc: 'show this experiment\'s variants' }],
  flags: [
    { name: 'model', type: 'string', value: 'MODEL', doc: "only this model's experiment" },
    { name: 'action', type: 'string', value: 'ACTION', doc: 'pin, unpin, reset, stop, resume or objective (needs <experiment>)' },
    { name: 'prompt-id', type: 'string', value: 'ID', doc: 'the variant to pin' },
    OBJECTIVE,
    ...ENGINE_FLAGS,
  ],
  examples: [
    'prompt-engine experiments',
    'prompt-engine experiments ticket_triage --model gpt-4o-mini',
    'prompt-engine experiments ticket_triage --action pin --prompt-id p-3',
    'prompt-engine experiments ticket_triage --action objective --objective kind=score --objective max_latency_ms_p90=2000',
  ],
  run: (p) => {
    requireStore(p, 'experiments');
    const args = given({ experiment: p.positionals[0], model: str(p, 'model'), action: str(p, 'action'), prompt_id: str(p, 'prompt-id'), objective: objectiveArg(p) });
    return runOp(p, { verb: 'experiments', op: 'experiment', args, human: (v) => {
      const exps = rowsOf(v, 'experiments');
      if (p.positionals[0] === undefined)
        return table(
          exps,
          [
            { key: 'experiment' },
            { key: 'model' },
            { key: 'status' },
            { key: 'generation', label: 'gen' },
            { key: 'objective', format: (x) => cellText(asObject(x ?? null).kind) },
            { key: 'outcomes' },
            { key: 'leader', format: (x) => cellText(asObject(x ?? null).prompt_id) },
            { key: 'leader_value', label: 'leader', format: (_x, r) => valueText(r.objective, asObject(r.leader ?? null).value) },
            { key: 'base_value', label: 'base', format: (_x, r) => valueText(r.objective, asObject(r.base ?? null).value) },
            {
              key: 'improvement',
              format: (x, r) => (typeof x !== 'number' ? '' : asObject(r.objective ?? null).kind === 'reward' ? `${x >= 0 ? '+' : ''}${x.toFixed(3)}` : `${x >= 0 ? '+' : ''}${(x * 100).toFixed(1)} pt`),
            },
            { key: 'variants' },
          ],
          width(),
        );
      return exps
        .map((e) => {
          const objective = asObject(e.objective ?? null);
          const graded = objective.kind !== 'success';
          const head = `${String(e.experiment)} (${String(e.model)}): ${String(e.status)}, generation ${String(e.generation)}, objective ${objectiveText(objective)}, ${String(e.outcomes)} outcomes, leader ${cellText(asObject(e.leader ?? null).prompt_id)}${e.pinned ? `, pinned ${String(e.pinned)}` : ''}\n`;
          const columns: Column[] = [
            { key: 'prompt_id' },
            { key: 'origin' },
            { key: 'state' },
            { key: 'count' },
            // no outcome yet: nothing measured (not 0%)
            { key: 'success_rate', label: 'success', format: (x, r) => (r.count === 0 ? '—' : pct(x)) },
            ...(graded
              ? [
                  { key: 'value', format: (x: Json | undefined) => valueText(objective, x) },
                  { key: 'score_mean', label: 'score', format: (x: Json | undefined) => (typeof x === 'number' ? x.toFixed(3) : '') },
                  { key: 'cost_per_call', label: 'cost', format: (x: Json | undefined) => (typeof x === 'number' ? x.toPrecision(3) : '') },
                  { key: 'latency_mean_ms', label: 'latency ms', format: (x: Json | undefined) => (typeof x === 'number' ? x.toFixed(0) : '') },
                ]
              : []),
            { key: 'p_best', label: 'P(best)', format: pct },
            { key: 'text', max: 400 },
          ];
          return `${head}${table(rowsOf(e, 'variants'), columns, width())}`;
        })
        .join('\n');
    } });
  },
};

const ops: Verb = {
  name: 'ops',
  summary: 'every op with its arguments, reply and errors (the describe op; docs/ops.md is the same data)',
  positionals: [{ name: 'op', doc: 'only this op, with its arguments' }],
  flags: [{ name: 'json', type: 'bool', doc: 'print as JSON' }, { name: 'markdown', type: 'bool', doc: 'print docs/ops.md (what npm run docs:ops writes)' }],
  run: async (p) => {
    // No engine needed: the description is the op table's own data.
    const all = describeOps(OPS);
    if (p.flags.has('markdown')) {
      process.stdout.write(opsMarkdown(all));
      return 0;
    }
    const name = p.positionals[0];
    const chosen = name === undefined ? all.ops : all.ops.filter((o) => o.name === name);
    if (chosen.length === 0) {
      process.stderr.write(`prompt-engine ops: not_found: no op named ${JSON.stringify(name)}; known: ${all.ops.map((o) => o.name).join(', ')}\n`);
      return 1;
    }
    if (p.flags.has('json')) {
      process.stdout.write(`${JSON.stringify(name === undefined ? all : chosen[0], null, 2)}\n`);
      return 0;
    }
    if (name === undefined) {
      process.stdout.write(table(all.ops.map((o) => ({ op: o.name, arguments: o.args.map((a) => (a.required ? a.name : `${a.name}?`)).join(' '), summary: o.summary })), [{ key: 'op' }, { key: 'arguments', max: 50 }, { key: 'summary', max: 400 }], width()));
      return 0;
    }
    const o = chosen[0]!;
    const flat = (as: ArgDescription[], prefix = ''): JsonObject[] =>
      as.flatMap((a) => [
        { argument: prefix + a.name, type: a.type, required: a.required ? 'yes' : (a.required_when ?? 'no'), default: a.default === undefined ? '' : JSON.stringify(a.default), meaning: a.alias_of ? `alias of ${a.alias_of}` : a.doc },
        ...flat(a.keys ?? [], `${prefix}${a.name}.`),
      ]);
    const errs = o.errors.map((e) => `  ${e.reason}: ${e.when}`).join('\n');
    process.stdout.write(
      `${o.name}: ${o.summary}\n\n${o.args.length === 0 ? 'no arguments\n' : table(flat(o.args), [{ key: 'argument' }, { key: 'type', max: 40 }, { key: 'required', max: 30 }, { key: 'default', max: 20 }, { key: 'meaning', max: 400 }], width())}\nreply: ${o.reply}\n${errs === '' ? '' : `\nerrors:\n${errs}\n`}`,
    );
    return 0;
  },
};

export const ENGINE_VERBS: readonly Verb[] = [call, health, renderVerb, optimize, choose, train, stats, query, experiments, ops];
