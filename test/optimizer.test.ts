/**
 * COPRO: offline proposer + learned evaluator, and the real-COPRO path
 * (LLM proposer + devset evaluator) against an OpenAI-compatible HTTP server.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErlFloat, record, type TermObject } from '../src/codec/terms.js';
import { CoproOptimizer } from '../src/optimizer/copro.js';
import { DevsetEvaluator, LearnedEvaluator } from '../src/optimizer/evaluators.js';
import { templateExpressions, variablesKept } from '../src/optimizer/variables.js';
import { OfflineProposer } from '../src/optimizer/proposers.js';
import { localEngine, type LocalEngine } from './helpers/engine.js';
import { startFakeLlm, type ChatRequest } from './helpers/fakeLlm.js';
import { okValue } from './helpers/results.js';

const value = okValue;
const num = (t: unknown): number => (t instanceof ErlFloat ? t.value : (t as number));

const TEMPLATE = 'Please write a {{language}} function for {{#if framework}}{{framework}} {{/if}}that parses {{context}}.\n{{#each rules}}- {{this}}\n{{/each}}';

describe('offline COPRO', () => {
  it('keeps every Handlebars expression of the template in every candidate', async () => {
    const p = new OfflineProposer();
    const cands = await p.propose({ base: TEMPLATE, tried: [], n: 12, temperature: 1.4, round: 0, context: { language: 'rust', framework: 'tokio', context: 'a CLI tool' }, variables: 'kept', signal: new AbortController().signal });
    expect(cands.length).toBeGreaterThan(5);
    for (const c of cands) {
      expect(variablesKept(TEMPLATE, c, 'kept')).toBe(true);
      expect(templateExpressions(c)).toEqual(expect.arrayContaining(templateExpressions(TEMPLATE)));
    }
    expect(variablesKept(TEMPLATE, TEMPLATE.replace('{{context}}', 'x'), 'kept')).toBe(false);
    // COPRO may add a variable; the closed loop may not.
    expect(variablesKept(TEMPLATE, `${TEMPLATE} {{extra}}`, 'kept')).toBe(true);
    expect(variablesKept(TEMPLATE, `${TEMPLATE} {{extra}}`, 'same')).toBe(false);
  });

  it('is deterministic, bounded by breadth and depth, and never returns worse than the base', async () => {
    // An evaluator that prefers prompts with a role line and an output format, penalises length.
    const predict = async (xs: string[]): Promise<number[]> =>
      xs.map((x) => 0.3 + (/^You are/m.test(x) ? 0.2 : 0) + (/Format the answer|Answer with/.test(x) ? 0.2 : 0) - x.length / 10_000);
    const run = () =>
      new CoproOptimizer(new OfflineProposer(), new LearnedEvaluator({ predict, outcomes: async () => new Map() }), { breadth: 4, depth: 2, initTemperature: 1.4 }).optimize(
        TEMPLATE,
        { language: 'rust' },
        new AbortController().signal,
      );
    const a = await run();
    const b = await run();
    expect(a.best.instruction).toBe(b.best.instruction);
    expect(a.candidates.length).toBeLessThanOrEqual(4 + 2 * 4);
    expect(a.best.score).toBeGreaterThanOrEqual(a.base.score);
    expect(a.best.instruction).toMatch(/^You are/m);
    expect(variablesKept(TEMPLATE, a.best.instruction, 'kept')).toBe(true);
  });

  it('lets tracked outcomes outweigh the model prediction (Beta posterior)', async () => {
    const ev = new LearnedEvaluator({
      predict: async (xs) => xs.map(() => 0.9),
      outcomes: async (ids) => new Map([[ids[0]!, { successes: 2, count: 100 }]]),
    });
    const [tracked, fresh] = await ev.evaluate(['tracked prompt', 'fresh prompt']);
    expect(tracked!.score).toBeLessThan(0.2); // 100 executions at 2% beat a 0.9 prior worth 10
    expect(fresh!.score).toBeGreaterThan(0.8);
    expect(tracked!.confidence).toBeGreaterThan(fresh!.confidence);
  });
});

describe('optimize_prompt and call_llm through the op table', () => {
  let llm: Awaited<ReturnType<typeof startFakeLlm>>;
  let pe: LocalEngine;
  // The fake model answers "yes"/"no" questions; it answers in one word only when told to.
  // Inputs ending in "#sel" are in the selection split (even indexes), "#held" held out.
  const brain = (req: ChatRequest): string[] => {
    const system = req.messages.find((m) => m.role === 'system')?.content ?? '';
    const user = req.messages.find((m) => m.role === 'user')?.content ?? '';
    if (system.startsWith('You are an instruction optimizer')) {
      return ['Answer the question. Answer with one word.', 'Answer the question. Memorise: overfit.', 'Answer the question politely.'].slice(0, req.n ?? 1);
    }
    const n = Number(/Is (\d+) even/.exec(user)?.[1] ?? 0);
    const expected = n % 2 === 0 ? 'yes' : 'no';
    if (system.includes('overfit')) return [user.endsWith('#sel') ? expected : 'maybe']; // perfect on selection, useless held out
    if (system.includes('one word')) return [n === 7 || n === 8 ? 'maybe' : expected]; // 90% on both splits
    return [`Well, let me think... the answer is probably ${expected === 'yes' ? 'not clear' : 'unclear'}`];
  };
  const devset = Array.from({ length: 20 }, (_, i) => ({ input: `Is ${i} even? #${i % 2 === 0 ? 'sel' : 'held'}`, output: i % 2 === 0 ? 'yes' : 'no' }));

  beforeAll(async () => {
    llm = await startFakeLlm(brain);
    pe = localEngine();
  });
  afterAll(async () => {
    await pe.close();
    await llm.close();
  });

  it('runs real COPRO with a devset and picks the winner on the held-out split', async () => {
    const r = value(
      await pe.call('optimize_prompt', record({ prompt: 'Answer the question.', devset: devset.map((d) => record(d)), llm: record({ url: llm.url }), breadth: 3, depth: 1 })),
    );
    expect(r.optimized_prompt).toBe('Answer the question. Answer with one word.');
    expect(num(r.optimization_score)).toBeGreaterThan(0.5);
    expect(r.optimization_score).toBeInstanceOf(ErlFloat);
    expect(r.confidence).toBeInstanceOf(ErlFloat);
    // the overfitting instruction scored best on the selection split but lost on held-out data
    const cands = r.candidates as TermObject[];
    const overfit = cands.find((c) => String(c.prompt).includes('overfit'))!;
    expect(num(overfit.score)).toBe(1);
    expect(r.cached).toBe(false);
    expect(String(r.improvement_summary)).toMatch(/llm proposer, devset evaluator/);
  });

  it('caps metric calls at the budget', async () => {
    const before = llm.requests.length;
    const r = value(
      await pe.call('optimize_prompt', record({ prompt: 'Answer.', devset: devset.map((d) => record(d)), llm: record({ url: llm.url }), breadth: 3, depth: 2, budget: 7 })),
    );
    expect(r.metric_calls).toBeLessThanOrEqual(7);
    const taskCalls = llm.requests.slice(before).filter((q) => !q.messages[0]!.content.startsWith('You are an instruction optimizer'));
    expect(taskCalls.length).toBeLessThanOrEqual(7);
  });

  it('answers a repeated request from the cache', async () => {
    const args = record({ prompt: 'Summarise the {{context}} for a {{language}} team.', language: 'elixir', breadth: 3, depth: 1 });
    const first = value(await pe.call('optimize_prompt', args));
    const second = value(await pe.call('optimize_prompt', args));
    expect(first.cached).toBe(false);
    expect(second.cached).toBe(true);
    expect(second.optimized_prompt).toBe(first.optimized_prompt);
  });

  it('rejects bad arguments with the field name', async () => {
    expect(await pe.call('optimize_prompt', record({ prompt: 'x', breadth: 0 }))).toMatchObject({ ok: false, reason: 'bad_request', message: 'breadth: expected an integer in 1..50' });
    expect(await pe.call('optimize_prompt', record({}))).toMatchObject({ ok: false, reason: 'bad_request', message: 'prompt: is required (a string)' });
    expect(await pe.call('optimize_prompt', record({ prompt: 'x', devset: [record({ input: 'a', output: 'b' })] }))).toMatchObject({ ok: false, reason: 'bad_request' });
  });

  it('call_llm returns text, model and usage; endpoint errors become llm_error', async () => {
    const r = value(await pe.call('call_llm', record({ model: 'm1', messages: [record({ role: 'user', content: 'Is 4 even? #sel' })], options: record({ llm: record({ url: llm.url }) }) })));
    expect(r.model).toBe('m1');
    expect(typeof r.text).toBe('string');
    expect(r.usage).toMatchObject({ prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 });
    const down = await pe.call('call_llm', record({ messages: [record({ role: 'user', content: 'hi' })], llm: record({ url: 'http://127.0.0.1:9/v1' }) }));
    expect(down).toMatchObject({ ok: false, reason: 'llm_error' });
    const none = await pe.call('call_llm', record({ messages: [record({ role: 'user', content: 'hi' })] }));
    expect(none).toMatchObject({ ok: false, reason: 'unavailable' });
    const bad = await pe.call('call_llm', record({ messages: [record({ role: 'robot', content: 'hi' })] }));
    expect(bad).toMatchObject({ ok: false, reason: 'bad_request', message: 'messages[0].role: expected one of system, user, assistant' });
  });

  it('sends LLM_API_KEY only to LLM_URL (a request naming another url sends its own key or none); no credential of a URL reaches an error', async () => {
    const other = await startFakeLlm(brain);
    const keyed = localEngine({ llmUrl: llm.url, llmApiKey: 'sk-configured-1' });
    const ask = (llmArg?: Record<string, string>) => keyed.call('call_llm', record({ messages: [record({ role: 'user', content: 'Is 4 even?' })], ...(llmArg === undefined ? {} : { llm: record(llmArg) }) }));
    try {
      value(await ask());
      expect(llm.authorizations.at(-1)).toBe('Bearer sk-configured-1');
      value(await ask({ url: `${llm.url}/` })); // the configured endpoint, written with a trailing slash
      expect(llm.authorizations.at(-1)).toBe('Bearer sk-configured-1');
      value(await ask({ url: other.url }));
      expect(other.authorizations.at(-1)).toBeUndefined();
      value(await ask({ url: other.url, api_key: 'sk-own-2' }));
      expect(other.authorizations.at(-1)).toBe('Bearer sk-own-2');
      for (const url of ['http://user:hunter2@127.0.0.1:9/v1', 'http://127.0.0.1:9/v1?api-key=qs-secret-3']) {
        const r = await ask({ url });
        expect(r).toMatchObject({ ok: false, reason: 'llm_error' });
        expect(JSON.stringify(r)).not.toMatch(/hunter2|qs-secret-3/);
      }
    } finally {
      await keyed.close();
      await other.close();
    }
  });

  it('records every optimization as a PromptEvolutionEntry', async () => {
    const r = value(await pe.call('optimize_prompt', record({ prompt: 'List the risks of {{context}}.', breadth: 3, depth: 1 })));
    const hist = value(await pe.call('query', record({ kind: 'evolution_history', prompt_id: String(r.prompt_id) })));
    const rows = hist.rows as TermObject[];
    expect(rows.length).toBeGreaterThanOrEqual(1);
    expect(rows[0]).toMatchObject({ evolution_type: 'optimization', evolved_prompt_id: r.prompt_id });
  });

  it('select_variant follows the tracked outcomes (Thompson sampling) and is sticky per key', async () => {
    for (let i = 0; i < 60; i++) {
      await pe.call('track_execution', record({ prompt_id: 'variant-good', execution_time_ms: 10, success: i % 10 !== 0 }));
      await pe.call('track_execution', record({ prompt_id: 'variant-bad', execution_time_ms: 10, success: i % 10 === 0 }));
    }
    const picks: string[] = [];
    for (let i = 0; i < 50; i++) picks.push(String(value(await pe.call('select_variant', record({ test_id: 'ab-1', variants: ['variant-bad', 'variant-good'] }))).variant));
    expect(picks.filter((p) => p === 'variant-good').length).toBeGreaterThan(45);
    const fresh: string[] = [];
    for (let i = 0; i < 40; i++) fresh.push(String(value(await pe.call('select_variant', record({ test_id: 'ab-2', variants: ['new-a', 'new-b'] }))).variant));
    expect(new Set(fresh).size).toBe(2); // no evidence: both arms explored
    const a = value(await pe.call('select_variant', record({ test_id: 'ab-2', variants: ['new-a', 'new-b'], key: 'user-7' })));
    const b = value(await pe.call('select_variant', record({ test_id: 'ab-2', variants: ['new-a', 'new-b'], key: 'user-7' })));
    expect(a.variant).toBe(b.variant);
    expect((a.posteriors as TermObject)['new-a']).toMatchObject({ successes: 0, failures: 0 });
  });
});
