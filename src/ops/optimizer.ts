/**
 * Ops of the optimizer part: `optimize_prompt` (COPRO), `call_llm`
 * (OpenAI-compatible chat completions), `select_variant` (Thompson
 * sampling over tracked outcomes).
 */
import { createHash } from 'node:crypto';
import { float, newMap, record, type TermObject } from '../codec/terms.js';
import type { EngineConfig } from '../config.js';
import { CoproOptimizer, COPRO_DEFAULTS } from '../optimizer/copro.js';
import { thompson } from '../optimizer/bandit.js';
import { DevsetEvaluator, LearnedEvaluator, promptIdOf, type DevExample, type Evaluator } from '../optimizer/evaluators.js';
import { chat, completionsUrl, LlmError, type ChatMessage, type ChatOptions, type LlmEndpoint } from '../optimizer/llmClient.js';
import type { OptimizeContext } from '../optimizer/promptBits.js';
import { LlmProposer, OfflineProposer, type Proposer } from '../optimizer/proposers.js';
import { hashSeed, seededRandom } from '../random.js';
import { boolean, either, integer, listOf, number, oneOf, record as recordArg, string, stringMap, type ArgsOf } from '../contract/schema.js';
import { typedOp, type OpSpec } from './types.js';
import { badRequest, OpError } from '../contract/errors.js';
import { ENGINE_KEYS } from '../cache/promptCache.js';

/** The keys of an `llm` map (optimize_prompt, call_llm). */
const LLM_KEYS = {
  url: string({ max: 2000, doc: 'base URL of an OpenAI-compatible endpoint (default LLM_URL)' }),
  model: string({ max: 200, doc: 'model name (default LLM_MODEL)' }),
  api_key: string({ max: 4000, doc: 'bearer token (default LLM_API_KEY, sent only to LLM_URL: with another url, only this key is sent)' }),
  timeout_ms: integer({ min: 100, max: 600_000, doc: 'per-request timeout' }),
};
type LlmArg = ArgsOf<typeof LLM_KEYS>;

/**
 * The `llm` argument over LLM_URL/LLM_MODEL/LLM_API_KEY: where an
 * OpenAI-compatible endpoint is. The configured key goes only to the
 * configured endpoint: a request naming another url (any caller can) sends
 * the key it gives, or none.
 */
function llmEndpoint(engine: { config: EngineConfig }, arg: LlmArg | undefined): LlmEndpoint | undefined {
  const url = arg?.url ?? engine.config.llmUrl;
  if (url === undefined) return undefined;
  const configured = engine.config.llmUrl !== undefined && completionsUrl(url) === completionsUrl(engine.config.llmUrl);
  return { url, model: arg?.model ?? engine.config.llmModel, apiKey: arg?.api_key ?? (configured ? engine.config.llmApiKey : undefined), timeoutMs: arg?.timeout_ms };
}

interface OptimizeArgs {
  prompt: string;
  context: Record<string, string>;
  language?: string;
  breadth: number;
  depth: number;
  temperature: number;
  devset?: DevExample[];
  llm?: LlmArg;
  budget: number;
  templateId?: string;
  useCache: boolean;
}

function toOptimizeContext(a: OptimizeArgs): OptimizeContext {
  const c = a.context;
  return {
    language: a.language ?? c.language,
    framework: c.framework,
    domain: c.domain,
    task: c.task,
    context: c.description ?? c.context,
    examples: a.devset?.slice(0, 2),
  };
}

const optimizePrompt = typedOp({
  name: 'optimize_prompt',
  summary: 'COPRO over the prompt: offline or LLM proposer, devset or learned evaluator',
  args: {
    prompt: string({ min: 1, max: 100_000, required: true, doc: 'the prompt (instruction) to improve' }),
    context: either(string({ max: 100_000 }), stringMap({}), { default: {}, doc: 'language, framework, domain, task, description: given to the proposer and the scorer (a string is the description)' }),
    language: string({ max: 100, doc: 'the programming language (else context.language)' }),
    breadth: integer({ min: 1, max: 50, default: COPRO_DEFAULTS.breadth, doc: 'candidates proposed per round' }),
    depth: integer({ min: 0, max: 10, default: COPRO_DEFAULTS.depth, doc: 'refinement rounds after the first' }),
    temperature: number({ min: 0, max: 2, default: COPRO_DEFAULTS.initTemperature, doc: 'proposal temperature of the first round' }),
    devset: listOf(recordArg({ input: string({ max: 100_000, required: true }), output: string({ max: 100_000, required: true }) }, {}), {
      max: 1000,
      doc: 'examples to measure candidates on with the LLM (needs llm or LLM_URL); without it the learned scorer and tracked outcomes judge',
    }),
    llm: recordArg(LLM_KEYS, { doc: 'the LLM endpoint for proposals and the devset (else LLM_URL/LLM_MODEL/LLM_API_KEY; without any, the offline proposer)' }),
    budget: integer({ min: 1, max: 100_000, default: 500, doc: 'at most this many LLM calls for devset evaluation' }),
    template_id: string({ max: 200, doc: 'the template the prompt came from (reported back, and cached results are dropped when it changes)' }),
    cache: boolean({ default: true, doc: 'answer from the result cache when the same request was optimized under the same model' }),
  },
  reply: '%{prompt, optimized_prompt, optimization_score: float, confidence: float, improvement_summary, candidates: [%{prompt, score: float, round, prompt_id}], template_used, cached: boolean, model_version, prompt_id, evolution_id, metric_calls}',
  errors: { cancelled: 'the caller cancelled or timed out (COPRO stops between candidates)' },
  examples: [{ prompt: 'Write a function that parses the input.', context: { language: 'elixir' }, breadth: 4, depth: 1 }],
  refine: (a): OptimizeArgs => ({
    prompt: a.prompt,
    context: typeof a.context === 'string' ? { context: a.context } : a.context,
    language: a.language,
    breadth: a.breadth,
    depth: a.depth,
    temperature: a.temperature,
    devset: a.devset as DevExample[] | undefined,
    llm: a.llm,
    budget: a.budget,
    templateId: a.template_id,
    useCache: a.cache,
  }),
  async handle(a, { engine, signal, log }) {
    const deps = await engine.service('optimizer');
    const endpoint = llmEndpoint(engine, a.llm);
    if (a.devset !== undefined && a.devset.length > 0 && endpoint === undefined)
      throw badRequest('devset', 'needs an LLM to run on (pass llm: %{url: ...} or set LLM_URL)');
    const modelVersion = await deps.modelVersion();
    const cache = await engine.service('cache');
    const signature = createHash('sha256')
      .update(JSON.stringify([a.prompt, a.context, a.language ?? null, a.breadth, a.depth, a.temperature, a.devset ?? null, endpoint?.url ?? null, modelVersion]))
      .digest('hex');
    const cacheKey = `${ENGINE_KEYS.optimize}${signature}`;
    if (a.useCache) {
      const hit = cache.get(cacheKey);
      if (hit.found) return record({ ...(hit.value as TermObject), cached: true });
    }

    const proposer: Proposer = endpoint ? new LlmProposer(endpoint, 'copro') : new OfflineProposer();
    const evaluator: Evaluator =
      endpoint && a.devset && a.devset.length > 0
        ? new DevsetEvaluator(endpoint, a.devset, a.budget)
        : new LearnedEvaluator({
            // Every candidate is a variant of the prompt being optimized: the scorer reads each against it.
            predict: async (xs) => (await deps.predict(xs, a.context, a.prompt)).p,
            outcomes: (ids) => deps.outcomes(ids),
          });
    const copro = new CoproOptimizer(proposer, evaluator, { breadth: a.breadth, depth: a.depth, initTemperature: a.temperature }, (p) =>
      log.debug(p, 'copro round'),
    );
    const r = await copro.optimize(a.prompt, toOptimizeContext(a), signal);
    const improvement = r.best.score - r.base.score;
    const changed = r.best.instruction !== a.prompt;
    const summary = changed
      ? `${proposer.kind} proposer, ${evaluator.kind} evaluator: ${r.candidates.length} candidates over ${r.rounds + 1} rounds; score ${r.base.score.toFixed(3)} → ${r.best.score.toFixed(3)} (${improvement >= 0 ? '+' : ''}${improvement.toFixed(3)})`
      : `${proposer.kind} proposer, ${evaluator.kind} evaluator: ${r.candidates.length} candidates over ${r.rounds + 1} rounds; none beat the original (${r.base.score.toFixed(3)})`;

    const evolutionId = await deps
      .recordEvolution({
        original_prompt_id: promptIdOf(a.prompt),
        evolved_prompt_id: promptIdOf(r.best.instruction),
        evolution_type: 'optimization',
        performance_improvement: improvement,
        evolution_timestamp: new Date().toISOString(),
        evolution_metadata: {
          proposer: proposer.kind,
          evaluator: evaluator.kind,
          rounds: String(r.rounds + 1),
          candidates: String(r.candidates.length),
          metric_calls: String(r.metricCalls),
          model_version: modelVersion,
        },
      })
      .catch((err: unknown) => {
        log.warn({ err }, 'could not record the evolution');
        return undefined;
      });

    const result = record({
      prompt: a.prompt,
      optimized_prompt: r.best.instruction,
      optimization_score: float(r.best.score),
      confidence: float(r.best.confidence),
      improvement_summary: summary,
      candidates: r.candidates.slice(0, 20).map((c) => record({ prompt: c.instruction, score: float(c.score), round: c.round, prompt_id: promptIdOf(c.instruction) })),
      template_used: a.templateId ?? null,
      cached: false,
      model_version: modelVersion,
      prompt_id: promptIdOf(r.best.instruction),
      evolution_id: evolutionId ?? null,
      metric_calls: r.metricCalls,
    });
    const tags = [`model:${modelVersion}`, ...(a.templateId ? [`template:${a.templateId}`] : [])];
    cache.put(cacheKey, result, tags);
    return result;
  },
});

interface CallLlmArgs {
  model?: string;
  messages: ChatMessage[];
  options: ChatOptions;
  llm?: LlmArg;
}

const callLlm = typedOp({
  name: 'call_llm',
  summary: 'one chat completion on the configured OpenAI-compatible endpoint',
  args: {
    messages: listOf(recordArg({ role: oneOf(['system', 'user', 'assistant'] as const, { required: true }), content: string({ max: 1_000_000, required: true }) }, {}), {
      min: 1,
      max: 500,
      required: true,
      doc: 'the conversation',
    }),
    model: string({ max: 200, doc: 'model name (default: llm.model, then LLM_MODEL)' }),
    options: recordArg(
      {
        temperature: number({ min: 0, max: 2, doc: 'sampling temperature' }),
        max_tokens: integer({ min: 1, max: 1_000_000, doc: 'completion length cap' }),
        top_p: number({ min: 0, max: 1, doc: 'nucleus sampling' }),
        llm: recordArg(LLM_KEYS, { doc: 'the endpoint (as the top-level llm; the Elixir client puts it here)' }),
      },
      { default: {}, doc: 'sampling options' },
    ),
    llm: recordArg(LLM_KEYS, { doc: 'the endpoint (else LLM_URL/LLM_MODEL/LLM_API_KEY)' }),
  },
  reply: '%{text, model, usage: %{prompt_tokens, completion_tokens, total_tokens}}',
  errors: { unavailable: 'no endpoint: neither llm.url nor LLM_URL is set', llm_error: 'the endpoint failed or answered with an error (the message says which)' },
  examples: [{ messages: [{ role: 'user', content: 'Say hi.' }], options: { temperature: 0 }, llm: { url: 'http://127.0.0.1:8080/v1' } }],
  // Both endpoints are read (and checked) when both are given; the top-level one wins.
  refine: (a): CallLlmArgs => {
    const o = a.options;
    const options: ChatOptions = {};
    if (o.temperature !== undefined) options.temperature = o.temperature;
    if (o.max_tokens !== undefined) options.max_tokens = o.max_tokens;
    if (o.top_p !== undefined) options.top_p = o.top_p;
    return { model: a.model, messages: a.messages as ChatMessage[], options, llm: a.llm ?? o.llm };
  },
  async handle(a, { engine, signal }) {
    const endpoint = llmEndpoint(engine, a.llm);
    if (endpoint === undefined) throw new OpError('unavailable', 'no LLM endpoint configured: set LLM_URL or pass llm: %{url: ...}');
    try {
      const r = await chat(endpoint, a.model, a.messages, a.options, signal);
      return record({ text: r.texts[0] ?? '', model: r.model, usage: record(r.usage) });
    } catch (err) {
      if (err instanceof LlmError) throw new OpError('llm_error', err.message);
      throw err;
    }
  },
});

interface SelectArgs {
  testId: string;
  variants: string[];
  key?: string;
}

const selectVariant = typedOp({
  name: 'select_variant',
  summary: 'Thompson sampling over the tracked outcomes of each variant (prompt id)',
  args: {
    test_id: string({ max: 500, required: true, doc: 'the A/B test' }),
    variants: listOf(string({ max: 500 }), {
      min: 1,
      max: 100,
      required: true,
      doc: 'prompt ids whose tracked executions are the evidence (while the database is unreachable: no evidence, uniform priors, rather than an error)',
    }),
    key: string({ max: 500, doc: 'make the draw sticky per key (a user id): the same key sees the same variant until the evidence moves' }),
  },
  reply: '%{test_id, variant, posteriors: %{prompt_id => %{successes, failures, mean: float, draw: float}}}',
  examples: [{ test_id: 'greeting', variants: ['p-a', 'p-b'], key: 'user-42' }],
  refine: (a): SelectArgs => ({ testId: a.test_id, variants: a.variants, key: a.key }),
  async handle(a, { engine }) {
    const outcomes = await (await engine.service('optimizer')).outcomes(a.variants);
    // With a key, the draw is seeded by (test, key): the same user keeps seeing the same variant
    // until the evidence moves; without one, a fresh draw each call.
    const rnd = a.key !== undefined ? seededRandom(hashSeed(`${a.testId}\u0000${a.key}`)) : Math.random;
    const { chosen, draws } = thompson(a.variants, outcomes, rnd);
    const posteriors = newMap();
    for (const d of draws) posteriors[d.id] = record({ successes: d.alpha - 1, failures: d.beta - 1, mean: float(d.alpha / (d.alpha + d.beta)), draw: float(d.draw) });
    return record({ test_id: a.testId, variant: chosen, posteriors });
  },
});

export const optimizerOps: OpSpec<unknown>[] = [optimizePrompt, callLlm, selectVariant];
