/**
 * The closed loop: the experiment state machine (priors, guardrail,
 * retirement, leader hysteresis, generations, pin/reset/stop), recovery
 * from the store after a restart, variable safety of proposals, an LLM
 * endpoint that is down or answers garbage (offline fallback, serving goes
 * on), no LLM at all, and outcomes that match no experiment.
 */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { decisionChange, DEFAULT_POLICY, Experiment, experimentKey, MAX_REFILL_DOUBLINGS, variantRow, type Candidate, type Decision } from '../src/experiments/experiment.js';
import type { ExperimentChange, ExperimentSnapshot, VariantRow } from '../src/store/experimentRecords.js';
import { DEFAULT_OBJECTIVE, NO_TOTALS, type Objective, type VariantTotals } from '../src/experiments/objective.js';
import { promptIdOf } from '../src/optimizer/evaluators.js';
import { templateVariables, variablesKept } from '../src/optimizer/variables.js';

const sameVariables = (base: string, candidate: string): boolean => variablesKept(base, candidate, 'same');
import type { Atom, TermObject } from '../src/codec/terms.js';
import { POOL_ANSWER_MS, unanswered, unreachable } from '../src/store/db.js';
import { localEngine, type LocalEngine } from './helpers/engine.js';
import { requireEnv, testSchemaOf } from './helpers/pg.js';
import { until } from './helpers/poll.js';
import { doorTo } from './helpers/door.js';
import { startFakeLlm } from './helpers/fakeLlm.js';
import { rowsFromHistory } from '../src/learning/trainer.js';
import { MemoryLoop } from './helpers/memoryLoop.js';

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const cand = (text: string, predicted: number | null = 0.5): Candidate => ({ id: promptIdOf(text), text, origin: 'llm', predicted });

function loop(policy = DEFAULT_POLICY): MemoryLoop {
  return new MemoryLoop({ id: promptIdOf('base {x}'), text: 'base {x}', origin: 'base', predicted: null }, policy);
}

const variantOf = (l: MemoryLoop, text: string) => l.exp.variants.get(promptIdOf(text))!;

describe('experiment state machine', () => {
  it("puts the scorer's prediction into the prior, worth priorStrength outcomes", () => {
    const l = loop({ ...DEFAULT_POLICY, priorStrength: 4 });
    l.addBatch([cand('good {x}', 0.9)], 1);
    const v = variantOf(l, 'good {x}');
    expect(v.priorAlpha).toBeCloseTo(1 + 4 * 0.9);
    expect(v.priorBeta).toBeCloseTo(1 + 4 * 0.1);
    expect(l.exp.base.priorAlpha).toBe(1);
  });

  it('keeps the most promising candidates of a batch in the pool and the rest in reserve', () => {
    const l = loop({ ...DEFAULT_POLICY, poolSize: 3 });
    l.addBatch([cand('a {x}', 0.2), cand('b {x}', 0.8), cand('c {x}', 0.5), cand('d {x}', 0.9)], 2);
    expect(l.exp.active.filter((v) => v.origin !== 'base').map((v) => v.text).sort()).toEqual(['b {x}', 'd {x}']);
    expect(l.exp.reserve.map((c) => c.text)).toEqual(['c {x}', 'a {x}']);
    expect(l.snap.row.proposals_made).toBe(1);
  });

  it('asks a proposer that brought nothing new again after twice as many outcomes each time (at most 16×), and after refillAfter once it brings something', () => {
    const l = loop({ ...DEFAULT_POLICY, refillAfter: 10 });
    // Outcomes until the next batch is due (the pool has room throughout: the base and one variant of 8).
    const due = (): number => {
      let n = 0;
      while (l.exp.wantsProposals() === 0) {
        l.observe(l.exp.base.id, n % 2 === 0);
        n++;
      }
      return n;
    };
    const batch = (texts: string[]): void => {
      const fresh = texts.filter((t) => !l.exp.variants.has(promptIdOf(t)));
      l.addBatch(texts.map((t) => cand(t)), 1);
      l.exp.noteBatch(fresh.length);
    };
    batch(['a {x}']);
    expect(due()).toBe(10);
    const waits = [];
    for (let i = 0; i < 6; i++) {
      batch(['a {x}']); // nothing new
      waits.push(due());
    }
    expect(waits).toEqual(waits.map((_, i) => 10 * 2 ** Math.min(i + 1, MAX_REFILL_DOUBLINGS)));
    expect(waits.at(-1)).toBe(160);
    batch(['b {x}']);
    expect(due()).toBe(10);
  });

  it('keeps at most maxReserve candidates in reserve, the most promising', () => {
    const l = loop({ ...DEFAULT_POLICY, poolSize: 2, maxReserve: 3 });
    l.addBatch(Array.from({ length: 10 }, (_, i) => cand(`c${i} {x}`, i / 10)), 1);
    expect(l.exp.active.length).toBe(2);
    expect(l.exp.reserve.map((c) => c.text)).toEqual(['c8 {x}', 'c7 {x}', 'c6 {x}']);
  });

  it('bans a variant worse than the base with 95% confidence, and never serves it again', () => {
    const l = loop();
    l.addBatch([cand('bad {x}')], 1);
    const bad = variantOf(l, 'bad {x}');
    const decisions = [];
    for (let i = 0; i < 60; i++) decisions.push(...l.observe(l.exp.base.id, i % 10 < 8), ...l.observe(bad.id, i % 10 < 2));
    expect(variantOf(l, 'bad {x}').state).toBe('banned');
    expect(decisions.some((d) => d.kind === 'banned' && d.variant.id === bad.id && d.confidence >= 0.95)).toBe(true);
    for (let i = 0; i < 200; i++) expect(l.exp.choose().variant.id).not.toBe(bad.id);
  });

  it('retires a variant that cannot beat the leader, and changes leaders only with confidence', () => {
    const l = loop({ ...DEFAULT_POLICY, guardConfidence: 1.01 });
    l.addBatch([cand('v1 {x}'), cand('v2 {x}')], 2);
    const v1 = variantOf(l, 'v1 {x}');
    const v2 = variantOf(l, 'v2 {x}');
    const decisions = [];
    for (let i = 0; i < 80; i++) {
      decisions.push(...l.observe(l.exp.base.id, i % 2 === 0));
      decisions.push(...l.observe(v1.id, i % 10 < 9));
      decisions.push(...l.observe(v2.id, i % 10 < 5));
    }
    expect(l.exp.leader.id).toBe(v1.id);
    expect(l.snap.row.leader_prompt_id).toBe(v1.id);
    const leaderChanges = decisions.filter((d) => d.kind === 'leader');
    expect(leaderChanges.length).toBeLessThanOrEqual(2);
    expect(leaderChanges.at(-1)).toMatchObject({ kind: 'leader', to: { id: v1.id } });
    for (const d of leaderChanges) if (d.kind === 'leader' && d.from.count >= DEFAULT_POLICY.minSamples) expect(d.confidence).toBeGreaterThanOrEqual(DEFAULT_POLICY.leaderConfidence);
    expect(l.exp.base.state === 'retired' || variantOf(l, 'v2 {x}').state === 'retired').toBe(true);
    expect(l.exp.pBetter(variantOf(l, 'v1 {x}'), variantOf(l, 'v2 {x}'))).toBeGreaterThan(0.99);
  });

  it('asks for proposals by counted outcomes, never by time', () => {
    const l = loop({ ...DEFAULT_POLICY, poolSize: 3, refillAfter: 10 });
    expect(l.exp.wantsProposals()).toBe(2);
    l.addBatch([cand('a {x}')], 2);
    expect(l.exp.wantsProposals()).toBe(0); // room, but fewer than refillAfter outcomes since the batch
    for (let i = 0; i < 10; i++) l.observe(l.exp.base.id, true);
    expect(l.exp.wantsProposals()).toBe(1);
  });

  it('serves a newcomer `warmup` times before it competes', () => {
    const l = loop({ ...DEFAULT_POLICY, warmup: 4 });
    for (let i = 0; i < 30; i++) l.observe(l.exp.base.id, true);
    l.addBatch([cand('new {x}', 0.1)], 1);
    const v = variantOf(l, 'new {x}');
    for (let i = 0; i < 4; i++) {
      expect(l.exp.choose().variant.id).toBe(v.id);
      l.observe(v.id, false);
    }
    expect(variantOf(l, 'new {x}').count).toBe(4);
  });

  it('serves only the pinned variant, and the leader once stopped; refuses to pin a banned one unless forced', () => {
    const l = loop();
    l.addBatch([cand('v {x}'), cand('bad {x}')], 2);
    const v = variantOf(l, 'v {x}');
    l.act('pin', { promptId: v.id });
    for (let i = 0; i < 20; i++) expect(l.exp.choose().variant.id).toBe(v.id);
    l.act('unpin');
    l.act('stop');
    for (let i = 0; i < 20; i++) expect(l.exp.choose().variant.id).toBe(l.exp.leader.id);
    expect(l.exp.wantsProposals()).toBe(0);
    l.act('resume');
    const bad = variantOf(l, 'bad {x}');
    for (let i = 0; i < 60; i++) l.observe(l.exp.base.id, i % 10 < 8), l.observe(bad.id, i % 10 < 2);
    expect(variantOf(l, 'bad {x}').state).toBe('banned');
    expect(() => l.act('pin', { promptId: bad.id })).toThrow(/banned.*force: true/);
    expect(() => l.act('pin', { promptId: 'p_nope' })).toThrow(/not a variant/);
    expect(() => l.act('resume', { promptId: 'p_nope' })).toThrow(/not a variant/);
    l.act('pin', { promptId: bad.id, force: true });
    expect(l.exp.choose().variant.id).toBe(bad.id);
  });

  it('never retires or bans the pinned variant, and decides nothing while stopped', () => {
    const l = loop();
    l.addBatch([cand('bad {x}')], 1);
    const bad = variantOf(l, 'bad {x}');
    l.act('pin', { promptId: bad.id });
    for (let i = 0; i < 60; i++) l.observe(l.exp.base.id, i % 10 < 8), l.observe(bad.id, i % 10 < 2);
    expect(variantOf(l, 'bad {x}').state).toBe('active');
    l.act('unpin');
    l.act('stop');
    expect(l.exp.decisions()).toEqual([]);
  });

  it('takes counts in any order: the larger reading wins', () => {
    const l = loop();
    const id = l.exp.base.id;
    expect(l.exp.recordTotals(id, { ...NO_TOTALS, successes: 3, count: 5, scored: 5, score_sum: 3 })).toBe(true);
    expect(l.exp.recordTotals(id, { ...NO_TOTALS, successes: 2, count: 4, scored: 4, score_sum: 2 })).toBe(false); // an older reading arriving late
    expect(l.exp.base.count).toBe(5);
    expect(l.exp.base.successes).toBe(3);
  });
});

describe('objectives: the right posterior for each kind of outcome recovers the right leader', () => {
  const obj = (o: Partial<Objective>): Objective => ({ ...DEFAULT_OBJECTIVE, ...o });
  const graded = (score: number, extra: Partial<VariantTotals> = {}): Partial<VariantTotals> => ({ count: 1, successes: score >= 0.5 ? 1 : 0, scored: 1, score_sum: score, score_sq: score * score, ...extra });
  /** Deterministic scores around a mean (a fixed spread, no randomness in the test). */
  const around = (mean: number, i: number): number => Math.min(1, Math.max(0, mean + [0.15, -0.1, 0.05, -0.15, 0.1, -0.05][i % 6]!));

  it('score: the best mean graded score leads, though every call "succeeds"', () => {
    const l = new MemoryLoop({ id: promptIdOf('base {x}'), text: 'base {x}', origin: 'base', predicted: null }, { ...DEFAULT_POLICY, guardConfidence: 1.01 }, obj({ kind: 'score' }));
    l.addBatch([cand('good {x}'), cand('fair {x}')], 2);
    const good = variantOf(l, 'good {x}').id;
    const fair = variantOf(l, 'fair {x}').id;
    for (let i = 0; i < 120; i++) {
      l.observe(l.exp.base.id, graded(around(0.55, i)));
      l.observe(good, graded(around(0.8, i)));
      l.observe(fair, graded(around(0.65, i)));
    }
    expect(l.exp.leader.id).toBe(good);
    expect(l.exp.value(variantOf(l, 'good {x}'))).toBeCloseTo(0.8, 1);
  });

  it('reward: a cheaper variant leads over a better-scoring one when cost is weighed', () => {
    const l = new MemoryLoop({ id: promptIdOf('base {x}'), text: 'base {x}', origin: 'base', predicted: null }, { ...DEFAULT_POLICY, guardConfidence: 1.01 }, obj({ kind: 'reward', cost_weight: 0.5 }));
    l.addBatch([cand('rich {x}'), cand('lean {x}')], 2);
    const rich = variantOf(l, 'rich {x}').id;
    const lean = variantOf(l, 'lean {x}').id;
    const cost = (c: number): Partial<VariantTotals> => ({ cost_n: 1, cost_sum: c, cost_sq: c * c });
    for (let i = 0; i < 150; i++) {
      l.observe(l.exp.base.id, graded(around(0.5, i), cost(0.4)));
      l.observe(rich, graded(around(0.85, i), cost(1.0))); // reward ≈ 0.35
      l.observe(lean, graded(around(0.75, i), cost(0.1))); // reward ≈ 0.70
    }
    expect(l.exp.leader.id).toBe(lean);
    expect(l.exp.value(variantOf(l, 'lean {x}'))).toBeGreaterThan(l.exp.value(variantOf(l, 'rich {x}')));
  });

  it('a variant that breaks a latency or cost constraint with 95% confidence is banned, the constraint named', () => {
    for (const [objective, slow] of [
      [obj({ kind: 'score', max_latency_ms_p90: 200 }), { latency_sum: 500, over_latency: 1 }],
      [obj({ kind: 'score', max_cost_per_call: 0.5 }), { cost_n: 1, cost_sum: 0.9, cost_sq: 0.81 }],
    ] as const) {
      const l = new MemoryLoop({ id: promptIdOf('base {x}'), text: 'base {x}', origin: 'base', predicted: null }, DEFAULT_POLICY, objective);
      l.addBatch([cand('slow {x}')], 1);
      const v = variantOf(l, 'slow {x}').id;
      const decisions = [];
      for (let i = 0; i < 40; i++) {
        l.observe(l.exp.base.id, graded(0.6, { latency_sum: 100, cost_n: 1, cost_sum: 0.1, cost_sq: 0.01 }));
        decisions.push(...l.observe(v, graded(0.9, slow)));
      }
      expect(variantOf(l, 'slow {x}').state).toBe('banned');
      const ban = decisions.find((d) => d.kind === 'banned');
      expect(ban).toMatchObject({ kind: 'banned', constraint: expect.stringMatching(objective.max_latency_ms_p90 !== null ? /max_latency_ms_p90/ : /max_cost_per_call/) });
    }
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

/** The loop's suites open many stores: on the suite's PostgreSQL when it has one (PGlite's own path: store, cli, tracking tests). */
const ON_POSTGRES = { postgres: true };

async function engineWith(llm?: string, dataDir?: string): Promise<LocalEngine> {
  const pe = localEngine({ llmUrl: llm, loopAwaitProposals: true, retrainEvery: 0, ...(dataDir ? { dataDir } : {}) }, ON_POSTGRES);
  cleanups.push(() => pe.close());
  return pe;
}

/**
 * An engine (on PostgreSQL) whose LLM is a server that keeps what it is asked (`onRequest`: answer later, or
 * never), served choices of `experiment` (from `base`) until the decider (its lease taken in the background) asks it for a batch.
 */
async function askingHeldLlm(experiment: string, base: string, onRequest: http.RequestListener, asked: () => boolean): Promise<LocalEngine> {
  const llm = http.createServer(onRequest);
  await new Promise<void>((r) => llm.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise((r) => llm.close(r)));
  cleanups.push(() => llm.closeAllConnections());
  const pe = localEngine({ llmUrl: `http://127.0.0.1:${(llm.address() as AddressInfo).port}/v1`, retrainEvery: 0 }, ON_POSTGRES);
  cleanups.push(() => pe.close());
  for (let i = 0; !asked(); i++) {
    if (i > 600) throw new Error('no proposal batch was asked for');
    await ok(pe, 'choose_prompt', { experiment, prompt: base });
    await new Promise((r) => setTimeout(r, 50));
  }
  return pe;
}

const ok = async (pe: LocalEngine, op: string, args: TermObject): Promise<TermObject> => {
  const r = await pe.call(op, args);
  if (!r.ok) throw new Error(`${op}: ${r.reason}: ${r.message}`);
  return r.value as TermObject;
};

/** An operator's action (the store's `change`) made to commit and then fail as a connection cut at its time limit does, until the returned undo. */
async function cutAfterCommit(pe: LocalEngine): Promise<() => void> {
  const records = (await pe.engine.service('store')).experiments;
  const change = records.change.bind(records);
  records.change = (async (...a: Parameters<typeof change>) => {
    await change(...a);
    throw unreachable(unanswered(POOL_ANSWER_MS));
  }) as typeof change;
  return () => {
    records.change = change;
  };
}

/** Two sidecars on one database (PostgreSQL: the suite's), in a schema of their own. */
function twoSidecars(prefix: string): [LocalEngine, LocalEngine] {
  const schema = testSchemaOf(`${prefix}-${process.pid}-${Date.now()}`);
  const open = (): LocalEngine => {
    const pe = localEngine({ retrainEvery: 0, dbSchema: schema, databaseUrl: requireEnv('TEST_DATABASE_URL') });
    cleanups.push(() => pe.close());
    return pe;
  };
  return [open(), open()];
}

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

  it('does not try a proposal that means what a known variant means (a near-duplicate by its embedding)', async () => {
    const same = 'Label the ticket {ticket} as billing, bug, or other.'; // the base with one comma more
    const other = 'You are a support lead. Read the ticket {ticket} and say whether it is about billing, a bug or something else.';
    const llm = await startFakeLlm(() => [same, other]);
    cleanups.push(() => llm.close());
    const pe = await engineWith(llm.url);
    await play(pe, 40, BASE, () => 0.5);
    const exp = ((await ok(pe, 'experiment', { experiment: 'triage' })).experiments as TermObject[])[0]!;
    const texts = (exp.variants as TermObject[]).map((v) => String(v.text));
    expect(texts).toContain(other);
    expect(texts).not.toContain(same);
    const figures = ((await ok(pe, 'stats', {})).services as TermObject).experiments as TermObject;
    expect(Number(figures.near_duplicates)).toBeGreaterThanOrEqual(1);
  }, 120_000);

  it('tries LLM proposals that keep the variables, never the ones that break them, and learns the better one', async () => {
    const llm = await startFakeLlm(() => [
      'Read the ticket {ticket} carefully, then label it billing, bug or other.',
      'Label the ticket as billing, bug or other.', // drops {ticket}
      'Label the ticket {tickets} as billing, bug or other.', // renames it
      'Label {ticket} for {customer}: billing, bug or other.', // adds one
      'Consider the customer message {ticket}\u0000 and classify it: billing, bug, or other.', // what the store cannot hold: it would fail the write of the whole batch
      'Which team owns {ticket}? Answer finance, engineering or support \ud800.',
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

  it('asks an LLM that proposes only what it proposed before less and less often', async () => {
    const same = ['Decide whether ticket {ticket} concerns billing, a bug, or something else; reply with one word.', 'Ticket: {ticket}\nCategory (billing, bug or other):'];
    const llm = await startFakeLlm(() => same);
    cleanups.push(() => llm.close());
    const pe = await engineWith(llm.url);
    await play(pe, 600, BASE, () => 0.5);
    // Every 50 outcomes without the backoff (12 requests); after the first, waits of 100, 200, 400: 4.
    expect(llm.requests.length).toBeGreaterThanOrEqual(2);
    expect(llm.requests.length).toBeLessThanOrEqual(5);
  }, 60_000);

  it('keeps a history: snapshots of the counts (servings per bucket add up) and every decision as an event', async () => {
    const llm = await startFakeLlm((req) => Array.from({ length: req.n ?? 1 }, (_, i) => `Variant ${i} ${req.messages.length}: label the ticket {ticket}.`));
    cleanups.push(() => llm.close());
    const pe = await engineWith(llm.url);
    await play(pe, 400, BASE, (t) => (t.startsWith('Variant 1') ? 0.9 : 0.3));
    await (await pe.engine.service('experiments')).settle();
    const e = ((await ok(pe, 'experiment', { experiment: 'triage', history: true })).experiments as TermObject[])[0]!;
    const history = e.history as TermObject[];
    const events = e.events as TermObject[];
    expect(history.length).toBeGreaterThanOrEqual(8);
    for (let i = 1; i < history.length; i++) {
      const served = Object.values(history[i]!.variants as TermObject).reduce((a: number, n) => a + Number(n), 0);
      expect(served).toBe(Number(history[i]!.outcomes) - Number(history[i - 1]!.outcomes));
      expect(Number(history[i]!.successes)).toBeLessThanOrEqual(Number(history[i]!.outcomes));
    }
    const kinds = new Set(events.map((x) => (x.kind as { name: string }).name));
    expect(kinds.has('admitted')).toBe(true);
    expect(kinds.has('retired') || kinds.has('banned') || kinds.has('leader')).toBe(true);
    const admitted = events.filter((x) => (x.kind as { name: string }).name === 'admitted').map((x) => x.prompt_id);
    for (const v of e.variants as TermObject[]) if ((v.origin as { name: string }).name !== 'base') expect(admitted).toContain(v.prompt_id);
    // Without history: true the reply stays as it was.
    const plain = ((await ok(pe, 'experiment', { experiment: 'triage' })).experiments as TermObject[])[0]!;
    expect(plain.history).toBeUndefined();
  }, 60_000);

  it('holds at most loopMaxExperiments experiments in memory, and reloads a dropped one from the store as it was', async () => {
    // Small batches: every one of the 100 experiments screens its first batch (each candidate embedded once), and eviction is what is tested.
    const pe = localEngine({ loopAwaitProposals: true, retrainEvery: 0, loopMaxExperiments: 20, loopPolicy: { batchSize: 2 } }, ON_POSTGRES);
    cleanups.push(() => pe.close());
    await play(pe, 30, BASE, () => 0.5);
    const before = ((await ok(pe, 'experiment', { experiment: 'triage' })).experiments as TermObject[])[0]!;
    for (let i = 0; i < 100; i++) await ok(pe, 'choose_prompt', { experiment: `other_${i}`, prompt: `Answer {q} number ${i}.`, context: { model: 'm1' } });
    const stats = ((await ok(pe, 'stats', {})).services as TermObject).experiments as TermObject;
    expect(Number(stats.experiments)).toBeLessThanOrEqual(20);
    expect(Number(stats.evicted)).toBeGreaterThanOrEqual(80);
    // what is kept beside each experiment (its callers' last context, its last history snapshot) leaves with it
    const svc = (await pe.engine.service('experiments')) as unknown as { contexts: Map<string, unknown>; decider: { snapshotAt: Map<string, number> } };
    expect(svc.contexts.size).toBeLessThanOrEqual(20);
    expect(svc.decider.snapshotAt.size).toBeLessThanOrEqual(20);
    // 'triage' was dropped from memory; its next use loads it from the store with everything it had.
    const after = ((await ok(pe, 'experiment', { experiment: 'triage' })).experiments as TermObject[])[0]!;
    expect(after.outcomes).toBe(30);
    expect(after.generation).toBe(before.generation);
    expect((after.variants as TermObject[]).map((v) => [v.prompt_id, v.count])).toEqual((before.variants as TermObject[]).map((v) => [v.prompt_id, v.count]));
    const c = await ok(pe, 'choose_prompt', { experiment: 'triage', prompt: BASE, context: { model: 'm1' } });
    expect(c.generation).toBe(before.generation);
  }, 120_000);

  it('reads an experiment again after an operator action failed, since one cut at its commit may have been applied', async () => {
    const pe = await engineWith();
    await ok(pe, 'choose_prompt', { experiment: 'cut_action', prompt: BASE, context: { model: 'm1' } });
    const restore = await cutAfterCommit(pe);
    expect(await pe.call('experiment', { experiment: 'cut_action', model: 'm1', action: 'stop' })).toMatchObject({ ok: false, reason: 'unavailable' });
    restore();
    // Before, this sidecar went on serving it as running (it skips its own notices, and its heartbeat said it was fresh);
    // then it read it again, but only after answering: asked right after, it still said running.
    const status = async (): Promise<string> => (((await ok(pe, 'experiment', { experiment: 'cut_action', model: 'm1' })).experiments as TermObject[])[0]!.status as Atom).name;
    expect(await status()).toBe('stopped');
  }, 60_000);

  it('applies a reset sent again after unavailable once, when it names its generation (one cut at its commit was applied)', async () => {
    const pe = await engineWith();
    await ok(pe, 'choose_prompt', { experiment: 'cut_reset', prompt: BASE, context: { model: 'm1' } });
    const generation = async (): Promise<number> => Number(((await ok(pe, 'experiment', { experiment: 'cut_reset', model: 'm1' })).experiments as TermObject[])[0]!.generation);
    const g = await generation();
    const restore = await cutAfterCommit(pe);
    const reset = { experiment: 'cut_reset', model: 'm1', action: 'reset', generation: g };
    expect(await pe.call('experiment', reset)).toMatchObject({ ok: false, reason: 'unavailable' });
    restore();
    // The retry: refused, the generation the first try started kept (without generation:, a second one would start).
    expect(await pe.call('experiment', reset)).toMatchObject({ ok: false, reason: 'conflict', message: expect.stringMatching(new RegExp(`^generation: cut_reset \\(m1\\) is at generation ${g + 1}, not ${g}`)) });
    expect(await generation()).toBe(g + 1);
    // Named right, it applies; any action may name it; without an action it is refused.
    expect(Number(((await ok(pe, 'experiment', { ...reset, generation: g + 1 })).experiments as TermObject[])[0]!.generation)).toBe(g + 2);
    expect(await pe.call('experiment', { experiment: 'cut_reset', model: 'm1', action: 'stop', generation: g })).toMatchObject({ ok: false, reason: 'conflict' });
    expect(await pe.call('experiment', { experiment: 'cut_reset', model: 'm1', generation: g + 2 })).toMatchObject({ ok: false, reason: 'bad_request', message: expect.stringMatching(/^generation: only goes with an action/) });
  }, 60_000);

  it('reads an experiment again after its proposal batch failed to be written, since one cut at its commit may be in the store', async () => {
    const pe = await engineWith();
    const records = (await pe.engine.service('store')).experiments;
    const changeMany = records.changeMany.bind(records);
    let cuts = 0;
    // The decider's first write (the first batch of proposals) commits; then its connection is cut before the answer comes.
    records.changeMany = (async (...a: Parameters<typeof changeMany>) => {
      const snaps = await changeMany(...a);
      if (cuts++ > 0) return snaps;
      throw unreachable(unanswered(POOL_ANSWER_MS));
    }) as typeof changeMany;
    await ok(pe, 'choose_prompt', { experiment: 'cut_batch', prompt: BASE, context: { model: 'm1' } });
    expect(cuts).toBeGreaterThan(0);
    const stored = (await records.load([{ name: 'cut_batch', model: 'm1' }]))[0]!.variants.filter((v) => v.state === 'active').length;
    expect(stored).toBeGreaterThan(1);
    // Before, this sidecar served the base alone: the admitted variants were in the store, not in its view.
    const active = async (): Promise<number> => Number(((await ok(pe, 'experiment', { experiment: 'cut_batch', model: 'm1' })).experiments as TermObject[])[0]!.active);
    await until(async () => (await active()) === stored, 5_000, 20);
  }, 60_000);

  it('admits no more than the pool and the cap hold in the store, when the view a batch was ranked on missed a write', async () => {
    const pe = await engineWith();
    const records = (await pe.engine.service('store')).experiments;
    const changeMany = records.changeMany.bind(records);
    const others = Array.from({ length: DEFAULT_POLICY.poolSize - 1 }, (_, i) => variantRow(cand(`Variant ${i}: label the ticket {ticket} as billing, bug or other.`), DEFAULT_POLICY, 'active', null));
    let first = true;
    // Just before the decider's first write (its first batch, ranked on a view holding the base alone), a write
    // this view never sees fills the pool: as a takeover whose first read failed, or a view one notice behind.
    records.changeMany = (async (...a: Parameters<typeof changeMany>) => {
      if (first) {
        first = false;
        await changeMany(a[0], [{ key: a[1][0]!.key, decide: () => ({ add: others }) }], a[2]);
      }
      return changeMany(...a);
    }) as typeof changeMany;
    await ok(pe, 'choose_prompt', { experiment: 'cap_held', prompt: BASE, context: { model: 'm1' } });
    expect(first).toBe(false);
    const stored = (await records.load([{ name: 'cap_held', model: 'm1' }]))[0]!.variants;
    expect(stored.some((v) => v.state === 'reserve')).toBe(true); // the batch was written, into the reserve
    // Before, the batch admitted the room its view saw (7 more): 15 served at once in a pool of 8.
    expect(stored.filter((v) => v.state === 'active').length).toBe(DEFAULT_POLICY.poolSize);
  }, 60_000);

  it('admits a candidate of the reserve in the write that retires a variant of a full pool, not one write later', async () => {
    const pe = localEngine({ loopAwaitProposals: true, retrainEvery: 0, loopPolicy: { refillAfter: 0 } }, ON_POSTGRES);
    cleanups.push(() => pe.close());
    const records = (await pe.engine.service('store')).experiments;
    const changeMany = records.changeMany.bind(records);
    // Every change the decider writes, with the locked state it was decided on.
    const written: Array<{ s: ExperimentSnapshot; c: ExperimentChange }> = [];
    records.changeMany = ((tx, items, writeEntries) =>
      changeMany(
        tx,
        items.map((i) => ({
          ...i,
          decide: (s: ExperimentSnapshot) => {
            const c = i.decide(s);
            if (c !== undefined) written.push({ s, c });
            return c;
          },
        })),
        writeEntries,
      )) as typeof changeMany;
    await play(pe, 400, BASE, (t) => (t === BASE ? 0.5 : Number.parseInt(promptIdOf(t).slice(-2), 16) % 2 === 0 ? 0.9 : 0.1));
    await (await pe.engine.service('experiments')).settle();
    const retiringAtFullPool = written.filter(
      ({ s, c }) =>
        (c.moves ?? []).some((m) => m.to === 'retired' || m.to === 'banned') &&
        s.variants.filter((v) => v.state === 'active').length === DEFAULT_POLICY.poolSize &&
        s.variants.some((v) => v.state === 'reserve'),
    );
    expect(retiringAtFullPool.length).toBeGreaterThan(0);
    // Before, the room was counted before the write's own retirement: none, so the admission waited for the next write.
    for (const { c } of retiringAtFullPool) expect((c.moves ?? []).filter((m) => m.to === 'active').length).toBeGreaterThan(0);
  }, 120_000);

  it('an experiment asked without model: at most 100 models in one reply; past that, name the model', async () => {
    const pe = localEngine({ retrainEvery: 0 }, ON_POSTGRES);
    cleanups.push(() => pe.close());
    for (let i = 0; i <= 100; i++) await ok(pe, 'choose_prompt', { experiment: 'many_models', prompt: BASE, context: { model: `m${String(i).padStart(3, '0')}` } });
    const r = await pe.call('experiment', { experiment: 'many_models' });
    expect(r).toMatchObject({ ok: false, reason: 'bad_request', message: 'experiment "many_models" runs for more than 100 models: name one (model:)' });
    // any one of them by its model, also one the sidecar does not hold and that sorts last
    const last = (await ok(pe, 'experiment', { experiment: 'many_models', model: 'm100' })).experiments as TermObject[];
    expect(last.map((e) => e.model)).toEqual(['m100']);
  }, 120_000);

  it('graded outcomes: a score-only experiment, a late rating that moves it, every component back after a restart, and bad outcomes refused with nothing stored', async () => {
    const pe = localEngine({ loopAwaitProposals: true, retrainEvery: 0 }, ON_POSTGRES);
    const objective = { kind: 'reward', cost_weight: 0.5, max_latency_ms_p90: 1000 };
    let c = await ok(pe, 'choose_prompt', { experiment: 'graded', prompt: BASE, context: { model: 'm1' }, objective });
    for (let i = 0; i < 20; i++) {
      c = await ok(pe, 'choose_prompt', { experiment: 'graded', prompt: BASE, context: { model: 'm1' } });
      // score only: no success given
      await ok(pe, 'track_execution', { prompt_id: c.prompt_id!, score: 0.4 + (i % 3) * 0.1, execution_time_ms: 100 + i, input_tokens: 50, output_tokens: 5, cost: 0.2, metadata: c.metadata! });
    }
    const one = async (): Promise<TermObject> => ((await ok(pe, 'experiment', { experiment: 'graded' })).experiments as TermObject[])[0]!;
    const before = await one();
    expect((before.objective as TermObject).kind).toMatchObject({ name: 'reward' });
    const served = (before.variants as TermObject[]).filter((v) => Number(v.count) > 0);
    expect(served.reduce((a, v) => a + Number(v.count), 0)).toBe(20);
    for (const v of served) {
      expect(Number(v.cost_per_call)).toBeCloseTo(0.2, 5);
      expect(Number(v.value)).toBeCloseTo(Number(v.score_mean) - 0.5 * 0.2, 5);
    }
    // A rating naming the choice (its metadata in the context) arrives late: it moves the variant's score.
    const target = served[0]!;
    const scoreBefore = Number(target.score_mean);
    await ok(pe, 'track_feedback', { prompt_id: target.prompt_id!, feedback_type: 'quality', rating: 5, context: c.metadata! });
    const afterRating = ((await one()).variants as TermObject[]).find((v) => v.prompt_id === target.prompt_id)!;
    expect(Number(afterRating.score_mean)).toBeGreaterThan(scoreBefore);
    expect(Number(afterRating.count)).toBe(Number(target.count)); // a rating is not another call
    // Bad outcomes: a clear bad_request naming the key, and nothing stored.
    const rows = async (): Promise<number> => ((await ok(pe, 'prompt_stats', { prompt_id: String(c.prompt_id) })).prompts as TermObject[])[0]!.count as number;
    const stored = await rows();
    for (const [bad, field] of [
      [{ score: 1.5 }, 'score'],
      [{ score: 0.5, execution_time_ms: -1 }, 'execution_time_ms'],
      [{ score: 0.5, cost: -0.1 }, 'cost'],
      [{ score: 0.5, latency: 3 }, 'latency'],
      [{}, 'success'],
    ] as const) {
      const r = await pe.call('track_execution', { prompt_id: c.prompt_id!, execution_time_ms: 1, metadata: c.metadata!, ...bad });
      expect(r).toMatchObject({ ok: false, reason: 'bad_request', message: expect.stringContaining(field) });
    }
    expect(await rows()).toBe(stored);
    // Every component comes back after a restart.
    const full = await one();
    await (await pe.engine.service('experiments')).settle();
    await pe.close();
    const again = localEngine({ dataDir: pe.dataDir, loopAwaitProposals: true, retrainEvery: 0 }, ON_POSTGRES);
    cleanups.push(() => again.close());
    const back = ((await ok(again, 'experiment', { experiment: 'graded' })).experiments as TermObject[])[0]!;
    const components = (e: TermObject) => (e.variants as TermObject[]).map((v) => [v.prompt_id, v.count, v.score_mean, v.cost_per_call, v.latency_mean_ms, v.value]);
    expect(components(back)).toEqual(components(full));
    expect(back.objective).toEqual(full.objective);
  }, 120_000);

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

  it('closes without waiting for a proposal batch in progress: its LLM request is aborted', async () => {
    // An LLM that never answers (the client would wait 60 s for it).
    const requests: http.IncomingMessage[] = [];
    const pe = await askingHeldLlm('hang', BASE, (req) => void requests.push(req), () => requests.length > 0);
    const aborted = new Promise<void>((r) => requests[0]!.socket.once('close', () => r()));
    await pe.close(); // within the test's 50 s, not after the LLM's 60 s
    await aborted;
    expect(requests.length).toBe(1);
  }, 50_000);

  it('writes nothing of a proposal batch whose experiment an operator stopped while the LLM answered', async () => {
    // An LLM that answers only when told to.
    const held: http.ServerResponse[] = [];
    const pe = await askingHeldLlm('held', BASE, (req, res) => void req.resume().on('end', () => held.push(res)), () => held.length > 0);
    const stopped = ((await ok(pe, 'experiment', { experiment: 'held', action: 'stop' })).experiments as TermObject[])[0]!;
    const proposals = ['You are a support lead. Read the ticket {ticket} and say whether it is about billing, a bug or something else.', 'Read the ticket {ticket} carefully, then label it billing, bug or other.'];
    held[0]!.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ choices: proposals.map((content) => ({ message: { role: 'assistant', content } })) }));
    const svc = await pe.engine.service('experiments');
    await until(async () => (((await ok(pe, 'stats', {})).services as TermObject).experiments as TermObject).batches === 1, 30_000, 20);
    await svc.settle();
    // Stopped: "serve the leader, propose nothing more" (docs/closed-loop.md), in the store as in the view.
    const ids = (e: TermObject): string[] => (e.variants as TermObject[]).map((v) => String(v.prompt_id)).sort();
    for (const fresh of [pe, localEngine({ retrainEvery: 0, dbSchema: testSchemaOf(pe.dataDir) }, ON_POSTGRES)]) {
      if (fresh !== pe) cleanups.push(() => fresh.close());
      const after = ((await ok(fresh, 'experiment', { experiment: 'held' })).experiments as TermObject[])[0]!;
      expect((after.status as { name: string }).name).toBe('stopped');
      expect(ids(after)).toEqual(ids(stopped));
      expect(after.proposals_made).toBe(stopped.proposals_made);
    }
  }, 60_000);

  it('applies no decision to a variant an operator pinned, nor any to a stopped experiment, when the lock finds them so', () => {
    const variant = (prompt_id: string): VariantRow => ({ prompt_id, text: prompt_id, origin: 'offline', prior_alpha: 1, prior_beta: 1, predicted: null, rank: null, state: 'active', ...NO_TOTALS });
    const snap = (over: Partial<ExperimentSnapshot['row']>): ExperimentSnapshot => ({
      row: { name: 'x', model: 'm', generation: 1, base_prompt_id: 'base', status: 'running', pinned_prompt_id: null, proposals_made: 1, leader_prompt_id: 'base', objective: DEFAULT_OBJECTIVE, outcomes_at_last_batch: 0, revision: 1, updated_at: '', ...over },
      variants: [variant('base'), variant('a'), variant('b')],
    });
    const exp = Experiment.fromSnapshot(snap({}), DEFAULT_POLICY);
    const v = (id: string) => exp.variants.get(id)!;
    // Made on the view before the operator's action committed.
    const decisions: Decision[] = [
      { kind: 'leader', from: v('base'), to: v('b'), improvement: 0.1, confidence: 0.99 },
      { kind: 'retired', variant: v('a'), against: v('b'), confidence: 0.99 },
    ];
    expect(decisionChange(snap({}), decisions).applied).toHaveLength(2);
    const pinned = decisionChange(snap({ pinned_prompt_id: 'a' }), decisions);
    expect(pinned.applied.map((d) => d.kind)).toEqual(['leader']);
    expect(pinned.change.moves).toBeUndefined();
    const stopped = decisionChange(snap({ status: 'stopped' }), decisions);
    expect(stopped.applied).toEqual([]);
    expect(stopped.change).toEqual({});
  });

  it('takes only the counts of a snapshot older than what the view holds (two reads answered out of order)', () => {
    const variant = (prompt_id: string, count: number): VariantRow => ({ prompt_id, text: prompt_id, origin: 'offline', prior_alpha: 1, prior_beta: 1, predicted: null, rank: null, state: 'active', ...NO_TOTALS, count, scored: count });
    const snap = (revision: number, pinned: string | null, count: number): ExperimentSnapshot => ({
      row: { name: 'x', model: 'm', generation: 1, base_prompt_id: 'base', status: 'running', pinned_prompt_id: pinned, proposals_made: 1, leader_prompt_id: 'base', objective: DEFAULT_OBJECTIVE, outcomes_at_last_batch: 0, revision, updated_at: '' },
      variants: [variant('base', count), variant('a', count)],
    });
    const exp = Experiment.fromSnapshot(snap(5, 'a', 10), DEFAULT_POLICY);
    // read before an operator's pin committed, answered after the read that has it
    exp.adopt(snap(4, null, 12));
    expect(exp.pinned).toBe('a');
    expect(exp.revision).toBe(5);
    expect(exp.variants.get('a')!.count).toBe(12);
    exp.adopt(snap(6, null, 12));
    expect(exp.pinned).toBeUndefined();
  });

  it('adopts all the writes of one experiment that share a transaction: a decision and a batch written together both reach the view', async () => {
    const pe = localEngine({ retrainEvery: 0 }, ON_POSTGRES);
    cleanups.push(() => pe.close());
    await ok(pe, 'choose_prompt', { experiment: 'together', prompt: BASE });
    const svc = (await pe.engine.service('experiments')) as unknown as {
      deciding: boolean;
      settle(): Promise<void>;
      view: { get(key: string): Experiment | undefined };
      decider: {
        writeDecisions(exp: Experiment, decisions: Decision[], also: (s: ExperimentSnapshot) => unknown): Promise<Experiment | undefined>;
        write(exp: Experiment, decide: (s: ExperimentSnapshot) => unknown): Promise<Experiment | undefined>;
      };
    };
    await until(() => svc.deciding, 30_000, 20);
    await svc.settle();
    const key = experimentKey('together', 'default');
    const exp = svc.view.get(key)!;
    const text = 'Sort the ticket {ticket} into billing, bug or other, and answer with that word only.';
    const candidate: Candidate = { id: promptIdOf(text), text, origin: 'offline', predicted: null };
    const before = exp.proposalsMade;
    // Queued in one tick: one transaction (the decider's group commit), a decision write first.
    const written = Promise.all([
      svc.decider.writeDecisions(exp, [], (s) => ({ fields: { outcomes_at_last_batch: s.row.outcomes_at_last_batch } })),
      svc.decider.write(exp, () => ({ add: [variantRow(candidate, DEFAULT_POLICY, 'active')], fields: { proposals_made: before + 1 } })),
    ]);
    await written;
    const now = svc.view.get(key)!;
    expect(now.variants.has(candidate.id)).toBe(true);
    expect(now.proposalsMade).toBe(before + 1);
  }, 60_000);

  it('keeps a decision it is writing when the experiment is read again meanwhile (a reload, a refresh): never serves a retired variant again for a while', async () => {
    const pe = await engineWith();
    await ok(pe, 'choose_prompt', { experiment: 'assumed', prompt: BASE });
    const svc = (await pe.engine.service('experiments')) as unknown as {
      deciding: boolean;
      settle(): Promise<void>;
      view: { get(key: string): Experiment | undefined };
      reload(key: string): Promise<Experiment | undefined>;
      decider: { writeDecisions(exp: Experiment, decisions: Decision[], also: (s: ExperimentSnapshot) => unknown): Promise<Experiment | undefined> };
    };
    await until(() => svc.deciding, 30_000, 20);
    await svc.settle();
    const key = experimentKey('assumed', 'default');
    const exp = svc.view.get(key)!;
    const retiring = [...exp.variants.values()].find((v) => v.state === 'active' && v.id !== exp.base.id)!;
    expect(retiring).toBeDefined();
    // The decider's write of a retirement held before its transaction, as the view assumes it (as the decider's step does).
    const records = (await pe.engine.service('store')).experiments;
    const changeMany = records.changeMany.bind(records);
    let go!: () => void;
    const gate = new Promise<void>((r) => (go = r));
    cleanups.push(() => go());
    records.changeMany = (async (...a: Parameters<typeof changeMany>) => {
      await gate;
      return changeMany(...a);
    }) as typeof changeMany;
    const decision: Decision = { kind: 'retired', variant: retiring, against: exp.base, confidence: 0.99 };
    exp.assume([decision]);
    const written = svc.decider.writeDecisions(exp, [decision], () => undefined);
    // Read again meanwhile (after a failed write or action, an outcome naming what the view lacks): the store does not have it yet.
    await svc.reload(key);
    // Before, the read put it back in the pool until the write landed.
    expect(svc.view.get(key)!.variants.get(retiring.id)!.state).toBe('retired');
    go();
    await written;
    records.changeMany = changeMany;
    expect(svc.view.get(key)!.variants.get(retiring.id)!.state).toBe('retired');
    expect((await records.load([{ name: 'assumed', model: 'default' }]))[0]!.variants.find((v) => v.prompt_id === retiring.id)!.state).toBe('retired');
  }, 60_000);

  it('serves each request a variant of its own base when two bases open one experiment at once (a rolling deploy)', async () => {
    const pe = localEngine({ retrainEvery: 0 }, ON_POSTGRES);
    cleanups.push(() => pe.close());
    const other = 'Sort the message {message} from {customer} into billing, bug or other.';
    const [a, b] = await Promise.all([ok(pe, 'choose_prompt', { experiment: 'deploy', prompt: BASE }), ok(pe, 'choose_prompt', { experiment: 'deploy', prompt: other })]);
    expect(sameVariables(BASE, String(a.prompt))).toBe(true);
    expect(sameVariables(other, String(b.prompt))).toBe(true);
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

  it("takes the store's state when an outcome names an experiment or generation another sidecar started and this one has not heard of yet", async () => {
    // Two sidecars on one database (PostgreSQL: the suite's); B stops following A's notices, as when one is still on its way.
    const [a, b] = twoSidecars('lag');
    const figuresOf = async (pe: LocalEngine): Promise<TermObject> => ((await ok(pe, 'stats', {})).services as TermObject).experiments as TermObject;
    const loop = (): Promise<TermObject> => figuresOf(b);
    await ok(a, 'choose_prompt', { experiment: 'lag', prompt: BASE, context: { model: 'm1' } });
    // A decides before B starts: a B that took the lease would load every experiment as it took over, A's generation 2 too.
    await until(async () => (await figuresOf(a)).deciding === true);
    await ok(b, 'choose_prompt', { experiment: 'lag', prompt: BASE, context: { model: 'm1' } });
    expect((await loop()).deciding).toBe(false);
    const following = (await b.engine.service('experiments')) as unknown as { freshness?: { close(): Promise<void> } };
    expect(following.freshness).toBeDefined();
    await following.freshness!.close();
    // A starts generation 2; its first choice is reported to B.
    const c2 = await ok(a, 'choose_prompt', { experiment: 'lag', prompt: `${BASE} Be brief.`, context: { model: 'm1' } });
    expect(c2.generation).toBe(2);
    await ok(b, 'track_execution', { prompt_id: c2.prompt_id!, success: true, execution_time_ms: 1, metadata: c2.metadata! });
    expect(await loop()).toMatchObject({ outcomes: 1, caught_up: 1, unmatched_outcomes: 0 });
    // B's own view (it follows nobody now) serves generation 2 with the outcome counted.
    const seen = ((await ok(b, 'experiment', { experiment: 'lag', model: 'm1' })).experiments as TermObject[])[0]!;
    expect(seen).toMatchObject({ generation: 2, outcomes: 1 });
    // An experiment B never served: read from the store and counted the same way.
    const other = await ok(a, 'choose_prompt', { experiment: 'lag-other', prompt: BASE, context: { model: 'm1' } });
    await ok(b, 'track_execution', { prompt_id: other.prompt_id!, success: false, execution_time_ms: 1, metadata: other.metadata! });
    expect(await loop()).toMatchObject({ outcomes: 2, caught_up: 2, unmatched_outcomes: 0 });
    // A prompt id that is no variant in the store either, an experiment nobody started: unmatched (stored, counted nowhere).
    await ok(b, 'track_execution', { prompt_id: 'p_never_a_variant', success: true, execution_time_ms: 1, metadata: c2.metadata! });
    await ok(b, 'track_execution', { prompt_id: c2.prompt_id!, success: true, execution_time_ms: 1, metadata: { experiment: 'nobody', model: 'm1' } });
    expect(await loop()).toMatchObject({ outcomes: 2, caught_up: 2, unmatched_outcomes: 2 });
  }, 60_000);

  it("catches a sidecar up with the decider's work before it serves, for fleet simulations (quiet, readNow)", async () => {
    const [a, b] = twoSidecars('quiet');
    await ok(a, 'choose_prompt', { experiment: 'triage', prompt: BASE, context: { model: 'm1' } });
    const decider = await a.engine.service('experiments');
    // A decides before B starts (B's service would try for the lease as it starts).
    await until(() => decider.deciding);
    await ok(b, 'choose_prompt', { experiment: 'triage', prompt: BASE, context: { model: 'm1' } });
    const follower = await b.engine.service('experiments');
    expect(follower.deciding).toBe(false);
    // B hears nothing from A from now on: only readNow moves its view.
    await (follower as unknown as { freshness: { close(): Promise<void> } }).freshness.close();
    const seen = async (pe: LocalEngine): Promise<{ revision: number; leader: string; outcomes: number; variants: string[] }> => {
      const e = ((await ok(pe, 'experiment', { experiment: 'triage', model: 'm1' })).experiments as TermObject[])[0]!;
      const variants = (e.variants as TermObject[]).map((v) => `${String(v.prompt_id)}:${String(v.state)}:${String(v.count)}`).sort();
      return { revision: Number(e.revision), leader: String((e.leader as TermObject).prompt_id), outcomes: Number(e.outcomes), variants };
    };
    const before = await seen(b);
    // A serves and counts until its decisions and proposals have moved the experiment well past what B read.
    await play(a, 60, BASE, (t) => (t === BASE ? 0.2 : 0.6));
    await decider.quiet('triage', 'm1');
    const atA = await seen(a);
    expect(atA.revision).toBeGreaterThan(before.revision);
    expect(atA.variants).not.toEqual(before.variants);
    expect(await seen(b)).toEqual(before);
    await follower.readNow('triage', 'm1');
    expect(await seen(b)).toEqual(atA);
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

  it("trains on the loop's outcomes as its counts, one row per variant and model, and reads one by one only the executions that carry a text", async () => {
    const llm = await startFakeLlm(() => ['Sort the ticket {ticket} into billing, bug or other.', 'You are a support lead. Classify {ticket}.']);
    cleanups.push(() => llm.close());
    const pe = await engineWith(llm.url);
    await play(pe, 300, BASE, (t) => (t.startsWith('Sort') ? 0.8 : 0.4));
    const text = (id: string, prompt: string, success: boolean, extra: Record<string, string> = {}): Promise<TermObject> =>
      ok(pe, 'track_execution', { prompt_id: id, success, execution_time_ms: 1, metadata: { prompt, task: 'triage-text', model: 'm1', ...extra } });
    await text('text-1', 'Say which team owns {ticket}.', true);
    // An outcome of the loop that also carries its text: counted by the loop, so read as its variant's counts only.
    const c = await ok(pe, 'choose_prompt', { experiment: 'triage', prompt: BASE, context: { model: 'm1' } });
    await text(String(c.prompt_id), String(c.prompt), true, c.metadata as Record<string, string>);
    await text('text-2', 'Route {ticket} to billing, bug or other.', false);
    // One the loop could not place (no generation, and no experiment of that name for that model): counted nowhere, so read with its text.
    await text(String(c.prompt_id), String(c.prompt), false, { experiment: 'triage', model: 'm-unknown' });
    const store = await pe.engine.service('store');

    const executions = await store.trainingExecutions();
    expect(executions.map((e) => e.prompt_id)).toEqual(['text-1', 'text-2', String(c.prompt_id)]);
    expect((await store.trainingExecutions({ limit: 1 })).map((e) => e.prompt_id)).toEqual([String(c.prompt_id)]); // the newest
    const loop = await store.experiments.outcomesByVariant();
    const rows = rowsFromHistory(executions, [], 0.2, await store.experiments.variantTexts(), loop);
    // Each of the 301 outcomes once, in the row of its variant (checked against every execution stored).
    const stored = await store.db.query(`SELECT prompt_id, success FROM prompt_executions WHERE metadata ? 'experiment' AND metadata->>'model' = 'm1'`);
    expect(stored).toHaveLength(301);
    const byVariant = new Map<string, { n: number; k: number }>();
    for (const r of stored) {
      const v = byVariant.get(String(r.prompt_id)) ?? { n: 0, k: 0 };
      byVariant.set(String(r.prompt_id), { n: v.n + 1, k: v.k + (r.success ? 1 : 0) });
    }
    const loopRows = rows.filter((r) => r.context.task === 'triage');
    expect(loopRows).toHaveLength(byVariant.size);
    expect(rows).toHaveLength(3 + byVariant.size);
    const texts = await store.experiments.variantTexts();
    for (const [id, v] of byVariant) {
      const row = loopRows.find((r) => r.prompt === texts.get(id)!.text)!;
      expect(row).toMatchObject({ w: v.n, context: { model: 'm1', task: 'triage' } });
      expect(row.y * row.w).toBeCloseTo(v.k, 9);
    }
  }, 60_000);

  it('retrains the scorer by itself every R outcomes, in the background, while choices keep being served', async () => {
    let k = 0;
    const llm = await startFakeLlm((req) => Array.from({ length: req.n ?? 1 }, () => `${(k++ % 2 === 0 ? 'Sort' : 'Read')} ticket ${k}: {ticket}. Answer billing, bug or other.`));
    cleanups.push(() => llm.close());
    // Proposals that differ by a number mean the same: neighbours by wording here, so that every one is tried and there is history to train on.
    const pe = localEngine({ llmUrl: llm.url, loopAwaitProposals: true, retrainEvery: 150, loopPolicy: { neighbourBandwidth: 0 } }, ON_POSTGRES);
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
    const first = localEngine({ llmUrl: llm.url, loopAwaitProposals: true, retrainEvery: 0 }, ON_POSTGRES);
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

describe('after a database outage (PostgreSQL)', () => {
  it('serves what was decided when restarted while the database is away (what it last read, kept in its data directory), and the store once it answers', async () => {
    const door = await doorTo(requireEnv('TEST_DATABASE_URL'), { open: true });
    cleanups.push(() => door.stop());
    const config = { databaseUrl: door.url, retrainEvery: 0, loopAwaitProposals: true, dbSchema: `pe_known_${process.pid}`, dataDir: fs.mkdtempSync(path.join(os.tmpdir(), 'pe-known-')) };
    const first = localEngine(config);
    cleanups.push(() => first.close());
    const BASE = 'Label the ticket {ticket} as billing, bug or other.';
    await play(first, 60, BASE, (t) => (t === BASE ? 0.3 : 0.6));
    const state = async (pe: LocalEngine): Promise<{ generation: number; active: string[]; leader: string }> => {
      const e = ((await ok(pe, 'experiment', { experiment: 'triage', model: 'm1' })).experiments as TermObject[])[0]!;
      const variants = e.variants as TermObject[];
      return { generation: Number(e.generation), active: variants.filter((v) => (v.state as Atom).name === 'active').map((v) => String(v.prompt_id)).sort(), leader: String((e.leader as TermObject).prompt_id) };
    };
    await (await first.engine.service('experiments')).settle(); // its last decisions written
    const before = await state(first);
    expect(before.active.length).toBeGreaterThan(1);
    await first.close();
    // The database away, the sidecar restarted on the same data directory.
    door.close();
    const second = localEngine(config);
    cleanups.push(() => second.close());
    const served = new Set<string>();
    for (let i = 0; i < 60; i++) served.add(String((await ok(second, 'choose_prompt', { experiment: 'triage', prompt: BASE, context: { model: 'm1' } })).prompt_id));
    // Before, the base alone (a generation of its own, journaled): now the variants that were served before.
    expect(served.size).toBeGreaterThan(1);
    for (const id of served) expect(before.active).toContain(id);
    // Back: the store's state, as before the outage (no generation of its own started by the restarted sidecar).
    door.open();
    await until(async () => (await second.call('experiment', { experiment: 'triage', model: 'm1' })).ok, 30_000, 100);
    expect(await state(second)).toMatchObject({ generation: before.generation, leader: before.leader });
  }, 120_000);

  it('reads the store again until it answers when it served an experiment from its last read (a connection refused while the database is up)', async () => {
    // The decider stays up (so nothing the serving sidecar does is written and adopted back); the serving one has a data directory of its own.
    const decider = localEngine({ retrainEvery: 0, loopAwaitProposals: true }, ON_POSTGRES);
    cleanups.push(() => decider.close());
    const BASE = 'Label the ticket {ticket} as billing, bug or other.';
    await play(decider, 60, BASE, (t) => (t === BASE ? 0.3 : 0.6));
    await (await decider.engine.service('experiments')).settle();
    const serving = { retrainEvery: 0, dbSchema: testSchemaOf(decider.dataDir), dataDir: fs.mkdtempSync(path.join(os.tmpdir(), 'pe-known-')) };
    const once = localEngine(serving, ON_POSTGRES);
    await ok(once, 'choose_prompt', { experiment: 'triage', prompt: BASE, context: { model: 'm1' } });
    await once.close();
    // While it is down the store moves (an operator's pin; its notice went to sidecars that served the experiment then).
    const store = await decider.engine.service('store');
    const stored = (await store.experiments.load([{ name: 'triage', model: 'm1' }]))[0]!;
    const pin = stored.variants.find((v) => v.state === 'active' && v.prompt_id !== stored.row.leader_prompt_id)!.prompt_id;
    await store.db.query(`UPDATE experiments SET pinned_prompt_id = $1, revision = revision + 1 WHERE name = 'triage' AND model = 'm1'`, [pin]);
    const again = localEngine(serving, ON_POSTGRES);
    cleanups.push(() => again.close());
    // Up and following the others (listening, its heartbeats coming back) before it holds the experiment...
    await ok(again, 'choose_prompt', { experiment: 'other', prompt: BASE, context: { model: 'm1' } });
    const loopFigures = async (): Promise<TermObject> => ((await ok(again, 'stats', {})).services as TermObject).experiments as TermObject;
    await until(async () => Number((await loopFigures()).lag_ms) < 500, 10_000, 20);
    // ...its first read of the experiment refused, as a server at max_connections refuses (53300): served from its last read.
    const own = await again.engine.service('store');
    const load = own.experiments.load.bind(own.experiments);
    own.experiments.load = () => Promise.reject(unreachable(Object.assign(new Error('sorry, too many clients already'), { code: '53300' })));
    const choice = await ok(again, 'choose_prompt', { experiment: 'triage', prompt: BASE, context: { model: 'm1' } });
    own.experiments.load = load;
    expect(Number((choice.metadata as TermObject).generation)).toBe(stored.row.generation);
    // Before, that copy (without the pin) served on: no tracking write failed, so no outage was seen to end, and no notice named it.
    const pinned = async (): Promise<boolean> => {
      for (let i = 0; i < 10; i++) if (String((await ok(again, 'choose_prompt', { experiment: 'triage', prompt: BASE, context: { model: 'm1' } })).prompt_id) !== pin) return false;
      return true;
    };
    await until(pinned, 10_000, 50);
  }, 120_000);

  it("keeps an outcome the store counted while the view reloads the store's counts after the outage", async () => {
    const base = 'Answer the question {question} in one word.';
    const door = await doorTo(requireEnv('TEST_DATABASE_URL'), { open: true });
    cleanups.push(() => door.stop());
    const pe = localEngine({ databaseUrl: door.url, retrainEvery: 0, dbSchema: `pe_reload_${process.pid}` });
    cleanups.push(() => pe.close());
    const c = await ok(pe, 'choose_prompt', { experiment: 'reload', prompt: base, context: { model: 'm' } });
    const outcome = (): Promise<TermObject> => ok(pe, 'track_execution', { prompt_id: c.prompt_id!, success: true, execution_time_ms: 1, metadata: c.metadata! });
    for (let i = 0; i < 3; i++) await outcome();
    const store = await pe.engine.service('store');
    // The database goes away: the next outcome is journaled, and counted in this view only until the store has it.
    door.close();
    await outcome();
    expect(store.databaseUp).toBe(false);
    // When it is back the journal is replayed and the view reloads the store's counts. The reload is held after its
    // read, and one more outcome is stored meanwhile: its receipt must not be undone by the reload.
    const load = store.experiments.load.bind(store.experiments);
    let readDone!: () => void;
    let release!: () => void;
    const read = new Promise<void>((r) => (readDone = r));
    const released = new Promise<void>((r) => (release = r));
    store.experiments.load = async (...args: Parameters<typeof load>) => {
      const snaps = await load(...args);
      readDone();
      await released;
      return snaps;
    };
    door.open();
    await read;
    await outcome();
    store.experiments.load = load;
    release();
    const counted = async (): Promise<number> => {
      const e = ((await ok(pe, 'experiment', { name: 'reload', model: 'm' })).experiments as TermObject[])[0]!;
      return Number(((e.variants as TermObject[]).find((v) => v.prompt_id === c.prompt_id) as TermObject).count);
    };
    // Right after the reload (before any other refresh could correct it): all five.
    await new Promise((r) => setImmediate(r));
    expect(await counted()).toBe(5);
    const rows = await store.db.query(`SELECT count FROM experiment_counts WHERE name = 'reload' AND prompt_id = $1`, [String(c.prompt_id)]);
    expect(Number(rows[0]!.count)).toBe(5);
  }, 60_000);
});
