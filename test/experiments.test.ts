/**
 * The closed loop: the experiment state machine (priors, guardrail,
 * retirement, leader hysteresis, generations, pin/reset/stop), recovery
 * from the store after a restart, variable safety of proposals, an LLM
 * endpoint that is down or answers garbage (offline fallback, serving goes
 * on), no LLM at all, and outcomes that match no experiment.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Experiment, DEFAULT_POLICY, pBetter, type Candidate } from '../src/experiments/experiment.js';
import { promptIdOf } from '../src/optimizer/evaluators.js';
import { sameVariables, templateVariables } from '../src/optimizer/variables.js';
import type { TermObject } from '../src/codec/terms.js';
import { localEngine, type LocalEngine } from './helpers/engine.js';
import { startFakeLlm } from './helpers/fakeLlm.js';

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const cand = (text: string, predicted: number | null = 0.5): Candidate => ({ id: promptIdOf(text), text, origin: 'llm', predicted });

function experiment(policy = DEFAULT_POLICY): Experiment {
  const base = Experiment.variant({ id: promptIdOf('base {x}'), text: 'base {x}', origin: 'base', predicted: null }, policy);
  return new Experiment('e', 'm', 1, base, policy);
}

describe('experiment state machine', () => {
  it("puts the scorer's prediction into the prior, worth priorStrength outcomes", () => {
    const e = experiment({ ...DEFAULT_POLICY, priorStrength: 4 });
    const [v] = e.addBatch([cand('good {x}', 0.9)], 1);
    expect(v!.priorAlpha).toBeCloseTo(1 + 4 * 0.9);
    expect(v!.priorBeta).toBeCloseTo(1 + 4 * 0.1);
    expect(e.base.priorAlpha).toBe(1);
  });

  it('keeps the most promising candidates of a batch in the pool and the rest in reserve', () => {
    const e = experiment({ ...DEFAULT_POLICY, poolSize: 3 });
    const added = e.addBatch([cand('a {x}', 0.2), cand('b {x}', 0.8), cand('c {x}', 0.5), cand('d {x}', 0.9)], 2);
    expect(added.map((v) => v.text)).toEqual(['d {x}', 'b {x}']);
    expect(e.reserve.map((c) => c.text)).toEqual(['c {x}', 'a {x}']);
  });

  it('bans a variant worse than the base with 95% confidence, and never serves it again', () => {
    const e = experiment();
    const [bad] = e.addBatch([cand('bad {x}')], 1);
    const decisions = [];
    for (let i = 0; i < 60; i++) decisions.push(...e.observe(e.base.id, i % 10 < 8), ...e.observe(bad!.id, i % 10 < 2));
    expect(bad!.state).toBe('banned');
    expect(decisions.some((d) => d.kind === 'banned' && d.variant === bad && d.confidence >= 0.95)).toBe(true);
    for (let i = 0; i < 200; i++) expect(e.choose().variant).not.toBe(bad);
  });

  it('retires a variant that cannot beat the leader, and changes leaders only with confidence', () => {
    const e = experiment({ ...DEFAULT_POLICY, guardConfidence: 1.01 });
    const [v1, v2] = e.addBatch([cand('v1 {x}'), cand('v2 {x}')], 2);
    const decisions = [];
    for (let i = 0; i < 80; i++) {
      decisions.push(...e.observe(e.base.id, i % 2 === 0));
      decisions.push(...e.observe(v1!.id, i % 10 < 9));
      decisions.push(...e.observe(v2!.id, i % 10 < 5));
    }
    expect(e.leader).toBe(v1);
    const leaderChanges = decisions.filter((d) => d.kind === 'leader');
    expect(leaderChanges.length).toBeLessThanOrEqual(2);
    expect(leaderChanges.at(-1)).toMatchObject({ kind: 'leader', to: v1 });
    expect(e.base.state === 'retired' || v2!.state === 'retired').toBe(true);
    expect(pBetter(v1!, v2!)).toBeGreaterThan(0.99);
  });

  it('asks for proposals by counted outcomes, never by time', () => {
    const e = experiment({ ...DEFAULT_POLICY, poolSize: 3, refillAfter: 10 });
    expect(e.wantsProposals()).toBe(2);
    e.addBatch([cand('a {x}')], 2);
    expect(e.wantsProposals()).toBe(0); // room, but fewer than refillAfter outcomes since the batch
    for (let i = 0; i < 10; i++) e.observe(e.base.id, true);
    expect(e.wantsProposals()).toBe(1);
  });

  it('serves a newcomer `warmup` times before it competes', () => {
    const e = experiment({ ...DEFAULT_POLICY, warmup: 4 });
    for (let i = 0; i < 30; i++) e.observe(e.base.id, true);
    const [v] = e.addBatch([cand('new {x}', 0.1)], 1);
    for (let i = 0; i < 4; i++) {
      const c = e.choose();
      expect(c.variant).toBe(v);
      e.observe(v!.id, false);
    }
    expect(v!.count).toBe(4);
  });

  it('serves only the pinned variant, and the leader once stopped', () => {
    const e = experiment();
    const [v] = e.addBatch([cand('v {x}')], 1);
    e.pinned = v!.id;
    for (let i = 0; i < 20; i++) expect(e.choose().variant).toBe(v);
    e.pinned = undefined;
    e.status = 'stopped';
    for (let i = 0; i < 20; i++) expect(e.choose().variant).toBe(e.leader);
    expect(e.wantsProposals()).toBe(0);
  });
});

describe('template variables', () => {
  it('sees both {{var}} and {var}, and refuses drops, additions and renames', () => {
    expect(templateVariables('Hi {{name}}, see {item} and {{#if x}}y{{/if}}')).toEqual(['{item}', '{{#if}}', '{{/if}}', '{{name}}'].sort());
    expect(sameVariables('Q: {sentence}\nA:', 'Is "{sentence}" plausible?')).toBe(true);
    expect(sameVariables('Q: {sentence}', 'Q: {sentance}')).toBe(false);
    expect(sameVariables('Q: {sentence}', 'Q: the sentence')).toBe(false);
    expect(sameVariables('Q: {sentence}', 'Q: {sentence} {extra}')).toBe(false);
    expect(sameVariables('Write {{lang}} code', 'Write {lang} code')).toBe(false);
  });
});

async function engineWith(llm?: string, dataDir?: string): Promise<LocalEngine> {
  const pe = localEngine({ llmUrl: llm, loopAwaitProposals: true, retrainEvery: 0, ...(dataDir ? { dataDir } : {}) });
  cleanups.push(() => pe.close());
  return pe;
}

const ok = async (pe: LocalEngine, op: string, args: TermObject): Promise<TermObject> => {
  const r = await pe.call(op, args);
  if (!r.ok) throw new Error(`${op}: ${r.reason}: ${r.message}`);
  return r.value as TermObject;
};

async function play(pe: LocalEngine, rounds: number, base: string, rate: (text: string) => number, model = 'm1'): Promise<string[]> {
  const served: string[] = [];
  for (let i = 0; i < rounds; i++) {
    const c = await ok(pe, 'choose_prompt', { experiment: 'triage', prompt: base, context: { model } });
    served.push(String(c.prompt));
    const success = ((i * 7919) % 100) / 100 < rate(String(c.prompt));
    await ok(pe, 'track_execution', { prompt_id: c.prompt_id!, success, execution_time_ms: 1, metadata: c.metadata! });
  }
  return served;
}

describe('the closed loop through the op table', () => {
  const BASE = 'Label the ticket {ticket} as billing, bug or other.';

  it('tries LLM proposals that keep the variables, never the ones that break them, and learns the better one', async () => {
    const llm = await startFakeLlm(() => [
      'Read the ticket {ticket} carefully, then label it billing, bug or other.',
      'Label the ticket as billing, bug or other.', // drops {ticket}
      'Label the ticket {tickets} as billing, bug or other.', // renames it
      'Label {ticket} for {customer}: billing, bug or other.', // adds one
      'You are a support lead. Label the ticket {ticket} as billing, bug or other.',
    ]);
    cleanups.push(() => llm.close());
    const pe = await engineWith(llm.url);
    const good = 'You are a support lead. Label the ticket {ticket} as billing, bug or other.';
    const served = await play(pe, 400, BASE, (t) => (t === good ? 0.9 : 0.3));
    expect(llm.requests.length).toBeGreaterThan(0);
    expect(llm.requests[0]!.messages.some((m) => m.content.includes(BASE))).toBe(true); // the base, verbatim
    const exp = (await ok(pe, 'experiment', { experiment: 'triage' })).experiments as TermObject[];
    const variants = exp[0]!.variants as TermObject[];
    expect(variants.every((v) => sameVariables(BASE, String(v.text)))).toBe(true);
    expect(variants.length).toBe(3);
    expect((exp[0]!.leader as TermObject).prompt_id).toBe(promptIdOf(good));
    expect(served.slice(-100).filter((t) => t === good).length).toBeGreaterThan(80);
    // The leader change and the retirements were recorded as evolutions and A/B results.
    const history = (await ok(pe, 'query', { kind: 'evolution_history', prompt_id: promptIdOf(good) })).rows as TermObject[];
    expect(history.some((r) => r.evolved_prompt_id === promptIdOf(good))).toBe(true);
  }, 60_000);

  it('keeps serving with the offline proposer when the LLM is down or answers garbage', async () => {
    const garbage = await startFakeLlm(() => ({ status: 200, body: { nonsense: true } }));
    cleanups.push(() => garbage.close());
    for (const url of ['http://127.0.0.1:9/v1', garbage.url]) {
      const pe = await engineWith(url);
      const served = await play(pe, 60, BASE, () => 0.5);
      expect(served.length).toBe(60);
      const stats = (await ok(pe, 'stats', {})).services as TermObject;
      const exp = (await ok(pe, 'experiment', { experiment: 'triage' })).experiments as TermObject[];
      const origins = new Set((exp[0]!.variants as TermObject[]).map((v) => String((v.origin as { name?: string }).name)));
      expect(origins.has('offline')).toBe(true);
      expect(stats.experiments).toBeDefined();
    }
  }, 60_000);

  it('uses the offline proposer when no LLM is configured', async () => {
    const pe = await engineWith(undefined);
    await play(pe, 30, BASE, () => 0.5);
    const exp = (await ok(pe, 'experiment', { experiment: 'triage' })).experiments as TermObject[];
    const variants = exp[0]!.variants as TermObject[];
    expect(variants.filter((v) => (v.origin as { name?: string }).name === 'offline').length).toBeGreaterThan(0);
    expect(variants.every((v) => sameVariables(BASE, String(v.text)))).toBe(true);
  }, 60_000);

  it('stores outcomes of unknown experiments and prompt ids, counts them nowhere, and answers ok', async () => {
    const pe = await engineWith(undefined);
    await play(pe, 5, BASE, () => 0.5);
    const r1 = await pe.call('track_execution', { prompt_id: 'p_unknown', success: true, execution_time_ms: 1, metadata: { experiment: 'triage', model: 'm1' } });
    const r2 = await pe.call('track_execution', { prompt_id: promptIdOf(BASE), success: true, execution_time_ms: 1, metadata: { experiment: 'nope', model: 'm1' } });
    expect(r1.ok && r2.ok).toBe(true);
    const exp = (await ok(pe, 'experiment', { experiment: 'triage' })).experiments as TermObject[];
    expect(exp[0]!.outcomes).toBe(5);
    const rows = (await ok(pe, 'query', { kind: 'prompt_executions', prompt_id: 'p_unknown' })).rows as TermObject[];
    expect(rows.length).toBe(1);
  }, 60_000);

  it('starts a new generation when the base prompt changes, keyed by model too', async () => {
    const pe = await engineWith(undefined);
    await play(pe, 5, BASE, () => 0.5);
    const c2 = await ok(pe, 'choose_prompt', { experiment: 'triage', prompt: `${BASE} Be brief.`, context: { model: 'm1' } });
    expect(c2.generation).toBe(2);
    const other = await ok(pe, 'choose_prompt', { experiment: 'triage', prompt: BASE, context: { model: 'm2' } });
    expect(other.generation).toBe(1);
    const bad = await pe.call('choose_prompt', { experiment: 'triage' });
    expect(bad).toMatchObject({ ok: false, reason: 'bad_request' });
  }, 60_000);

  it('retrains the scorer by itself every R outcomes, in the background, while choices keep being served', async () => {
    let k = 0;
    const llm = await startFakeLlm((req) => Array.from({ length: req.n ?? 1 }, () => `${(k++ % 2 === 0 ? 'Sort' : 'Read')} ticket ${k}: {ticket}. Answer billing, bug or other.`));
    cleanups.push(() => llm.close());
    const pe = localEngine({ llmUrl: llm.url, loopAwaitProposals: true, retrainEvery: 150 });
    cleanups.push(() => pe.close());
    const trained: TermObject[] = [];
    pe.engine.events.on('event', (e: { name: string; payload: TermObject }) => e.name === 'model_trained' && trained.push(e.payload));
    const learner = await pe.engine.service('learner');
    let servedWhileTraining = 0;
    for (let i = 0; i < 400 || (learner.training && i < 5000); i++) {
      const c = await ok(pe, 'choose_prompt', { experiment: 'triage', prompt: BASE, context: { model: 'm1' } });
      if (learner.training) servedWhileTraining++;
      await ok(pe, 'track_execution', { prompt_id: c.prompt_id!, success: String(c.prompt).startsWith('Sort') ? i % 10 < 8 : i % 10 < 3, execution_time_ms: 1, metadata: c.metadata! });
    }
    await new Promise<void>((resolve) => {
      const t = setInterval(() => !learner.training && (clearInterval(t), resolve()), 50);
    });
    expect(learner.figures.continuous).toBeGreaterThanOrEqual(1);
    expect(trained.length).toBeGreaterThanOrEqual(1);
    expect(servedWhileTraining).toBeGreaterThan(0);
    const models = await (await pe.engine.service('store')).models.list();
    expect(models.length).toBeGreaterThanOrEqual(1);
  }, 120_000);

  it('comes back from the store after a restart with every variant, outcome, pin and leader', async () => {
    const llm = await startFakeLlm((req) => [`Variant ${req.messages.length} of: label the ticket {ticket}.`, 'Sort the ticket {ticket} into billing, bug or other.']);
    cleanups.push(() => llm.close());
    const first = localEngine({ llmUrl: llm.url, loopAwaitProposals: true, retrainEvery: 0 });
    await play(first, 200, BASE, (t) => (t.startsWith('Sort') ? 0.9 : 0.2));
    const before = ((await ok(first, 'experiment', { experiment: 'triage' })).experiments as TermObject[])[0]!;
    await ok(first, 'experiment', { experiment: 'triage', action: 'pin', prompt_id: String((before.leader as TermObject).prompt_id) });
    await (await first.engine.service('experiments')).settle();
    await first.close();

    const second = await engineWith(llm.url, first.dataDir);
    const after = ((await ok(second, 'experiment', { experiment: 'triage' })).experiments as TermObject[])[0]!;
    expect(after.outcomes).toBe(200);
    expect(after.generation).toBe(before.generation);
    expect((after.leader as TermObject).prompt_id).toBe((before.leader as TermObject).prompt_id);
    expect(after.pinned).toBe((before.leader as TermObject).prompt_id);
    const byId = (vs: TermObject[]) => Object.fromEntries(vs.map((v) => [String(v.prompt_id), [v.count, v.successes, String((v.state as { name?: string }).name)]]));
    expect(byId(after.variants as TermObject[])).toEqual(byId(before.variants as TermObject[]));
  }, 60_000);
});
