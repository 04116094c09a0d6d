/**
 * One experiment, many sidecars, one PostgreSQL: real sidecar processes
 * driven through the closed loop on data/multiprompt (sports_understanding,
 * airoboros-13b), proposals from the stand-in paraphrasing LLM.
 *  - three Port sidecars, choices round-robin, each outcome sent to a random
 *    sidecar (one outcome id sent twice, to another sidecar than the one
 *    that stored it): counts summed over the variants
 *    equal the outcomes sent, every sidecar gives the same leader, variants
 *    and counts, proposal requests stay those of one sidecar, the variant
 *    cap holds, a view follows another sidecar's outcome within the bound,
 *    and when the deciding sidecar is killed with -9 another decides within
 *    5 s, with no outcome lost or counted twice (20 sent to it as it was
 *    killed, then again to a survivor) and no leader change but by the
 *    confidence rule (the recorded changes lead from the base to the leader);
 *  - three sidecars in one NATS queue group, every request through NATS and
 *    outcomes through JetStream: the same agreement, exact counts (one
 *    outcome sent twice), proposal requests and the cap, and the deciding
 *    instance killed with -9 with outcomes on their way: another decides
 *    within 5 s, each outcome counted once;
 *  - PostgreSQL stopped mid-run (serving and counting go on), then every
 *    sidecar restarted: every experiment (one made during the outage
 *    included), variant, count and leader as they were.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import type { TermObject } from '../src/codec/terms.js';
import { hashSeed, seededRandom } from '../src/random.js';
import { DEFAULT_POLICY } from '../src/experiments/experiment.js';
import { startFakeParaphraser } from '../src/learning/offline/loopSim/fakeParaphraser.js';
import { accuracyOf } from '../src/learning/offline/loopSim/world.js';
import { agreed, deciderOf, drive, natsPeer, portPeer, viewOf, world, type Drive, type ExperimentView, type Peer } from './helpers/fleet.js';
import type { NatsConnection } from 'nats';
import { OwnNatsServer, natsConnect, requestJson } from './helpers/nats.js';
import { freshDatabase, startPrivatePostgres } from './helpers/pg.js';

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => undefined);
});

const W = world('sports_understanding', 'airoboros-13b');
const MODEL = W.group.model;
const ROUNDS = 3_000;
/** The variant cap per generation, low enough that a run reaches it (the default, 30, it may not): then a fleet that overshot it shows. */
const CAP = 12;
const ENV = { PROMPT_ENGINE_RETRAIN_EVERY: '0', LLM_MODEL: 'fake', PROMPT_ENGINE_LOOP_MAX_VARIANTS: String(CAP) };

async function llm() {
  const l = await startFakeParaphraser([W.task]);
  cleanups.push(() => l.close());
  return l;
}

async function ports(n: number, env: NodeJS.ProcessEnv, prefix = 'p'): Promise<Array<Peer & { dataDir: string }>> {
  const peers = await Promise.all(Array.from({ length: n }, (_, i) => portPeer(`${prefix}${i + 1}`, { ...ENV, ...env })));
  for (const p of peers) cleanups.push(() => p.kill());
  return peers;
}

const sum = (v: { variants: Array<{ count: number }> }): number => v.variants.reduce((a, x) => a + x.count, 0);

/** A sidecar's closed-loop figures (`stats`). */
const loopFigures = async (p: Peer): Promise<TermObject> => ((await p.call('stats', {})).services as TermObject).experiments as TermObject;

/** Every leader change recorded for the experiment (PromptEvolution entries the loop wrote). */
async function leaderChanges(p: Peer, experiment: string, variantIds: string[]): Promise<TermObject[]> {
  const out: TermObject[] = [];
  for (const id of variantIds) {
    const rows = (await p.call('query', { kind: 'evolution_history', prompt_id: id, limit: 1000 })).rows as TermObject[];
    for (const r of rows) {
      const m = r.evolution_metadata as TermObject;
      if (m.experiment === experiment && r.original_prompt_id === id && !out.some((o) => o.id === r.id)) out.push(r);
    }
  }
  return out;
}

/**
 * The leader changes the loop recorded, in order, lead from the base to the leader every sidecar serves now
 * (a leader changed without a recorded decision, as by a restart, breaks the chain), and each one decided on
 * enough outcomes met the confidence rule.
 */
async function expectLeaderChain(p: Peer, experiment: string, view: ExperimentView): Promise<number> {
  const e = ((await p.call('experiment', { experiment, model: MODEL })).experiments as TermObject[])[0]!;
  const base = String((e.base as TermObject).prompt_id);
  const left = (await leaderChanges(p, experiment, view.variants.map((v) => v.prompt_id))).sort((a, b) => Date.parse(String(a.evolution_timestamp)) - Date.parse(String(b.evolution_timestamp)));
  const changes = left.length;
  let leader = base;
  // Followed by their links (the earliest first where one leader was left twice): two changes in one millisecond keep their order.
  while (left.length > 0) {
    const at = left.findIndex((c) => String(c.original_prompt_id) === leader);
    expect(at, `a leader change starts from the leader before it (${leader}); left: ${JSON.stringify(left.map((c) => [c.original_prompt_id, c.evolved_prompt_id]))}`).toBeGreaterThanOrEqual(0);
    const c = left.splice(at, 1)[0]!;
    leader = String(c.evolved_prompt_id);
    const m = c.evolution_metadata as TermObject;
    const [fromCount, confidence] = [Number(m.from_count), Number(m.confidence)];
    expect(Number.isFinite(fromCount) && Number.isFinite(confidence), JSON.stringify(m)).toBe(true);
    if (fromCount >= DEFAULT_POLICY.minSamples) expect(confidence).toBeGreaterThanOrEqual(DEFAULT_POLICY.leaderConfidence);
  }
  expect(view.leader, 'the leader served is where the recorded changes lead').toBe(leader);
  return changes;
}

/**
 * `n` outcomes sent to `victim` without waiting for their answers, then `victim` killed with -9 once the first
 * is answered (the rest stored or not, answered or not): each sent again with its id through `retry`, as a
 * client retries one it got no answer to. Their ids join `d.sent`. Returns when it was killed, and for the log
 * how many were answered before the kill and how many the store had before they were sent again.
 */
async function killWithOutcomesInFlight(
  victim: Peer,
  chooser: Peer,
  retry: Peer,
  experiment: string,
  d: Drive,
  rnd: () => number,
  afterKill: () => Promise<void> = async () => undefined,
  n = 20,
): Promise<{ killedAt: number; log: string }> {
  const choices = await Promise.all(Array.from({ length: n }, () => chooser.call('choose_prompt', { experiment, prompt: W.task.base.text, context: { model: MODEL } })));
  const entries = choices.map((c) => ({ id: randomUUID(), prompt_id: c.prompt_id, success: rnd() < accuracyOf(W.group, String(c.prompt)), execution_time_ms: 1, metadata: c.metadata }));
  let answered = 0;
  // Not awaited: the victim dies with them (an answer lost, or a NATS request left to time out). The first goes
  // alone, the rest a moment later (a batch of their own while the first commits); killed once the first is
  // answered, so that the rest are being read, written or answered as it dies.
  const send = (e: (typeof entries)[number]): void => void victim.call('track_execution', e).then(() => answered++, () => undefined);
  send(entries[0]!);
  await new Promise((r) => setTimeout(r, 1));
  for (const e of entries.slice(1)) send(e);
  for (const t0 = Date.now(); answered < 1 && Date.now() - t0 < 10_000; ) await new Promise((r) => setTimeout(r, 1));
  await victim.kill();
  const killedAt = Date.now();
  const before = answered;
  await afterKill();
  // How many the store had from the victim (answered or not) before they are sent again.
  let stored = 0;
  for (const e of entries) stored += ((await retry.call('query', { kind: 'by_id', id: e.id })).rows as TermObject[]).length;
  for (const e of entries) await retry.call('track_execution', e);
  for (const e of entries) d.sent.add(e.id);
  return { killedAt, log: `${before} of ${n} answered, ${stored} stored` };
}

/**
 * Until the NATS server routes the queue group's requests to live instances only: it stops routing to a killed
 * one once it has read its closed socket (at once when idle, hundreds of milliseconds on a busy machine), and a
 * request routed to it meanwhile is lost. Six `health` requests in a row answered within a second each say so.
 */
async function routedToTheLiving(nc: NatsConnection): Promise<void> {
  for (let answered = 0, tries = 0; answered < 6; tries++) {
    expect(tries, 'the queue group still routes to the killed instance').toBeLessThan(200);
    answered = await requestJson(nc, 'health', {}, 1_000).then(
      () => answered + 1,
      () => 0,
    );
  }
}

describe('one experiment, many sidecars on one PostgreSQL', () => {
  it('three Port sidecars share one state: exact counts, one decider, the cap, bounded staleness, takeover after kill -9', async () => {
    const url = await freshDatabase('pe_fleet_port');
    // One sidecar alone first: the proposal requests a fleet may make.
    const soloLlm = await llm();
    const [solo] = await ports(1, { DATABASE_URL: url, LLM_URL: soloLlm.url }, 'solo');
    const soloRun = await drive(W, 'solo', ROUNDS, seededRandom(hashSeed('solo')), { choose: () => solo!, report: () => solo! });
    await solo!.close();
    // Restarted, it comes back with exactly what it counted.
    const [again] = await ports(1, { DATABASE_URL: url, LLM_URL: soloLlm.url }, 'solo-again');
    expect(sum(await viewOf(again!, 'solo', MODEL))).toBe(soloRun.sent.size);
    await again!.close();

    const fleetLlm = await llm();
    const peers = await ports(3, { DATABASE_URL: url, LLM_URL: fleetLlm.url });
    let live: Peer[] = [...peers];
    const rnd = seededRandom(hashSeed('fleet'));
    let killed: Peer | undefined;
    let takeoverMs = -1;
    let duplicate: { id: string; peer: Peer } | undefined;
    let inFlight = '';
    let reportedTo: Peer | undefined;
    const run = await drive(W, 'fleet', ROUNDS, rnd, {
      choose: (i) => live[i % live.length]!,
      report: () => (reportedTo = live[Math.floor(rnd() * live.length)]!),
      each: async (i, d) => {
        if (i === 100) {
          // The same outcome sent again, to another sidecar than the one that stored it: stored and counted once.
          const id = [...d.sent].at(-1)!;
          const settled = await agreed(live, 'fleet', MODEL, (v) => sum(v) === d.sent.size);
          expect(sum(settled[0]!)).toBe(d.sent.size);
          const other = live.find((p) => p !== reportedTo)!;
          const row = ((await other.call('query', { kind: 'by_id', id })).rows as TermObject[])[0]!;
          await other.call('track_execution', { id, prompt_id: row.prompt_id, success: row.success, execution_time_ms: 1, metadata: row.metadata });
          duplicate = { id, peer: other };
          // Past the staleness bound (1 s: a count of it twice would show by then), every view still counts it once.
          await new Promise((r) => setTimeout(r, 1_100));
          for (const v of await agreed(live, 'fleet', MODEL, () => true, 0)) expect(sum(v)).toBe(d.sent.size);
        }
        if (i === 1_500) {
          killed = await deciderOf(live);
          expect(killed).toBeDefined();
          // Killed with outcomes on their way to it: each sent again to a survivor counts once, none is lost.
          const survivors = live.filter((p) => p !== killed);
          const k = await killWithOutcomesInFlight(killed!, survivors[0]!, survivors[1]!, 'fleet', d, rnd);
          inFlight = k.log;
          live = survivors;
          const t0 = k.killedAt;
          while ((await deciderOf(live)) === undefined && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 50));
          takeoverMs = Date.now() - t0;
        }
      },
    });
    expect(duplicate).toBeDefined();
    process.stderr.write(`[fleet] another sidecar decided ${takeoverMs} ms after the decider was killed; of the outcomes on their way to it then, ${inFlight} before they were sent again\n`);
    expect(takeoverMs).toBeGreaterThanOrEqual(0);
    expect(takeoverMs).toBeLessThan(5_000);

    // Every sidecar gives the same state, and the counts are exactly the outcomes sent.
    const views = await agreed(live, 'fleet', MODEL, (v) => sum(v) === run.sent.size);
    for (const v of views) expect(v).toEqual(views[0]);
    expect(sum(views[0]!)).toBe(run.sent.size);
    expect(views[0]!.outcomes).toBe(run.sent.size);
    // The cap per generation, reached and held fleet-wide.
    expect(views[0]!.variants.length).toBe(CAP);
    // No outcome went unmatched because the sidecar storing it had not heard of its variant yet: that view read the store first.
    const loops = await Promise.all(live.map(loopFigures));
    process.stderr.write(`[fleet] outcomes whose variant a view had not heard of yet, per sidecar: ${loops.map((l) => l.caught_up).join(', ')}\n`);
    for (const l of loops) expect(l.unmatched_outcomes).toBe(0);

    // One stream of proposals, however many sidecars serve.
    process.stderr.write(`[fleet] proposal requests: one sidecar ${soloLlm.requests}, three sidecars ${fleetLlm.requests}\n`);
    expect(fleetLlm.requests).toBeLessThanOrEqual(Math.max(Math.floor(1.2 * soloLlm.requests), soloLlm.requests + 1));

    // The leader changed only by recorded decisions, each by the confidence rule (or from a leader with too few outcomes to judge).
    process.stderr.write(`[fleet] leader changes: ${await expectLeaderChain(live[0]!, 'fleet', views[0]!)}\n`);

    // A view follows another sidecar's outcome within the staleness bound (1 s by default; typically far sooner).
    const delays: number[] = [];
    for (let k = 0; k < 10; k++) {
      const [a, b] = k % 2 === 0 ? [live[0]!, live[1]!] : [live[1]!, live[0]!];
      const c = await a.call('choose_prompt', { experiment: 'fleet', prompt: W.task.base.text, context: { model: MODEL } });
      const before = sum(await viewOf(b, 'fleet', MODEL));
      await a.call('track_execution', { prompt_id: c.prompt_id, success: true, execution_time_ms: 1, metadata: c.metadata });
      const t0 = Date.now();
      while (sum(await viewOf(b, 'fleet', MODEL)) <= before && Date.now() - t0 < 5_000) await new Promise((r) => setTimeout(r, 5));
      delays.push(Date.now() - t0);
    }
    process.stderr.write(`[fleet] another sidecar's view had the outcome after ${delays.join(', ')} ms\n`);
    expect(Math.max(...delays)).toBeLessThan(1_000);
  }, 600_000);

  it('three sidecars in one NATS queue group: every request through NATS, outcomes through JetStream, one state, takeover after kill -9', async () => {
    const url = await freshDatabase('pe_fleet_nats');
    const server = await OwnNatsServer.start();
    cleanups.push(() => server.stop());
    const nc = await natsConnect(server.url);
    cleanups.push(() => nc.close());
    // One instance alone first: the proposal requests a queue group may make.
    const soloLlm = await llm();
    const solo = await natsPeer('n-solo', server.url, { ...ENV, DATABASE_URL: url, LLM_URL: soloLlm.url }, nc);
    cleanups.push(() => solo.kill());
    await drive(W, 'queue-solo', ROUNDS, seededRandom(hashSeed('nats-solo')), { choose: () => solo, report: () => solo });
    await solo.close();
    const l = await llm();
    let peers: Array<Peer & { direct: Peer }> = [];
    for (let i = 0; i < 3; i++) {
      const p = await natsPeer(`n${i + 1}`, server.url, { ...ENV, DATABASE_URL: url, LLM_URL: l.url }, nc);
      cleanups.push(() => p.kill());
      peers.push(p);
    }
    const rnd = seededRandom(hashSeed('nats'));
    const through = peers[0]!; // `call` goes through NATS: any instance of the queue group answers
    let takeoverMs = -1;
    let inFlight = '';
    const run = await drive(W, 'queue', ROUNDS, rnd, {
      choose: () => through,
      report: () => through,
      each: async (i, d) => {
        if (i === 100) {
          // The same outcome sent again through NATS (whichever instance takes it): stored and counted once.
          const id = [...d.sent].at(-1)!;
          await agreed(peers.map((p) => p.direct), 'queue', MODEL, (v) => sum(v) === d.sent.size, 30_000);
          const row = ((await through.call('query', { kind: 'by_id', id })).rows as TermObject[])[0]!;
          await through.call('track_execution', { id, prompt_id: row.prompt_id, success: row.success, execution_time_ms: 1, metadata: row.metadata });
        }
        if (i === 1_500) {
          // The deciding instance killed with outcomes on their way through NATS: each sent again with its id.
          const direct = await deciderOf(peers.map((p) => p.direct));
          const victim = peers.find((p) => p.direct === direct);
          expect(victim).toBeDefined();
          peers = peers.filter((p) => p !== victim);
          // Sent to the victim's own Port (through NATS they might all go to the others), sent again through NATS.
          const k = await killWithOutcomesInFlight(victim!.direct, through, through, 'queue', d, rnd, () => routedToTheLiving(nc));
          inFlight = k.log;
          const t0 = k.killedAt;
          while ((await deciderOf(peers.map((p) => p.direct))) === undefined && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 50));
          takeoverMs = Date.now() - t0;
        }
      },
    });
    process.stderr.write(`[fleet] NATS: another instance decided ${takeoverMs} ms after the decider was killed; of the outcomes on their way then, ${inFlight} before they were sent again\n`);
    expect(takeoverMs).toBeGreaterThanOrEqual(0);
    expect(takeoverMs).toBeLessThan(5_000);
    // Each instance, asked through its own Port, holds the same state, every outcome counted once (the ones the
    // killed instance had taken from JetStream and not acknowledged are delivered again, after the ack wait).
    const direct = peers.map((p) => p.direct);
    const views = await agreed(direct, 'queue', MODEL, (v) => sum(v) === run.sent.size, 40_000);
    for (const v of views) expect(v).toEqual(views[0]);
    expect(sum(views[0]!)).toBe(run.sent.size);
    expect(views[0]!.outcomes).toBe(run.sent.size);
    expect(views[0]!.variants.length).toBe(CAP);
    // The queue group spread the requests: each surviving instance served choices and stored outcomes; one decided.
    const stats = await Promise.all(direct.map((p) => p.call('stats', {})));
    for (const s of stats) expect(Number(((s.ops as TermObject).choose_prompt as TermObject).calls)).toBeGreaterThan(0);
    const deciding = stats.filter((s) => ((s.services as TermObject).experiments as TermObject | undefined)?.deciding === true);
    expect(deciding.length).toBe(1);
    const consumed = stats.map((s) => Number((((s.services as TermObject).nats as TermObject).jetstream as TermObject | null)?.written ?? 0));
    for (const c of consumed) expect(c).toBeGreaterThan(0);
    for (const s of stats) expect(((s.services as TermObject).experiments as TermObject).unmatched_outcomes).toBe(0);
    // One stream of proposals, however many instances serve.
    process.stderr.write(`[fleet] NATS proposal requests: one instance ${soloLlm.requests}, three instances ${l.requests}\n`);
    expect(l.requests).toBeLessThanOrEqual(Math.max(Math.floor(1.2 * soloLlm.requests), soloLlm.requests + 1));
    process.stderr.write(`[fleet] NATS leader changes: ${await expectLeaderChain(direct[0]!, 'queue', views[0]!)}\n`);
  }, 600_000);

  it('PostgreSQL stopped for 30 s mid-run, then every sidecar restarted: every experiment, variant, count and leader as before', async () => {
    const pgServer = await startPrivatePostgres();
    cleanups.push(() => pgServer.destroy());
    const l = await llm();
    const env = { DATABASE_URL: pgServer.url, LLM_URL: l.url };
    let peers = await ports(3, env, 'o');
    const dirs = peers.map((p) => p.dataDir);
    const rnd = seededRandom(hashSeed('outage'));
    const route = { choose: (i: number) => peers[i % 3]!, report: () => peers[Math.floor(rnd() * 3)]! };
    const first = await drive(W, 'outage', 800, rnd, route);
    pgServer.stop();
    // Serving and counting go on while the database is away (30 s); a new experiment starts too.
    const during = { sent: new Set<string>() };
    for (const t0 = Date.now(); Date.now() - t0 < 30_000; ) for (const id of (await drive(W, 'outage', 50, rnd, route)).sent) during.sent.add(id);
    const born = await peers[1]!.call('choose_prompt', { experiment: 'born_in_outage', prompt: 'Answer {question} in one word.', context: { model: MODEL } });
    await peers[2]!.call('track_execution', { prompt_id: born.prompt_id, success: true, execution_time_ms: 1, metadata: born.metadata });
    pgServer.start();
    const after = await drive(W, 'outage', 300, rnd, route);
    const sent = first.sent.size + during.sent.size + after.sent.size;
    let before = await agreed(peers, 'outage', MODEL, (v) => sum(v) === sent, 30_000);
    // The state before the restart is the one the decider has settled on these counts: it takes its lease
    // again within a second of the database's return and may still decide (a retirement, a leader change)
    // on the last outcomes. Taken once a decider holds the lease and two views 1.1 s apart are the same.
    for (let tries = 0; tries < 20; tries++) {
      await new Promise((r) => setTimeout(r, 1_100));
      const again = await agreed(peers, 'outage', MODEL, (v) => sum(v) === sent, 30_000);
      const settled = JSON.stringify(again[0]) === JSON.stringify(before[0]) && (await deciderOf(peers)) !== undefined;
      before = again;
      if (settled) break;
    }
    expect(sum(before[0]!)).toBe(sent);

    // Every sidecar restarted, on the journals it had.
    for (const p of peers) await p.close();
    peers = await Promise.all(dirs.map((d, i) => portPeer(`o${i + 1}-again`, { ...ENV, ...env }, d)));
    for (const p of peers) cleanups.push(() => p.kill());
    const restarted = await agreed(peers, 'outage', MODEL, (v) => sum(v) === sent, 30_000);
    // Everything the store held is back as it was: every outcome, variant and the leader. The decider may have gone
    // on between `before` and the restart with what the same counts already warranted (a pending retirement), and
    // may have admitted a proposal batch: a new variant, active, with no outcome yet.
    const known = new Map(before[0]!.variants.map((x) => [x.prompt_id, x]));
    for (const v of restarted) {
      const b = before[0]!;
      expect({ generation: v.generation, outcomes: v.outcomes, leader: v.leader, pinned: v.pinned }).toEqual({ generation: b.generation, outcomes: b.outcomes, leader: b.leader, pinned: b.pinned });
      for (const x of v.variants) {
        const was = known.get(x.prompt_id);
        if (was === undefined) expect(x, 'a variant admitted after the snapshot').toMatchObject({ count: 0, state: 'active' });
        else {
          expect([x.count, x.successes], x.prompt_id).toEqual([was.count, was.successes]);
          expect(x.state === was.state || (was.state === 'active' && ['retired', 'banned'].includes(x.state)), `${x.prompt_id}: ${was.state} → ${x.state}`).toBe(true);
        }
      }
      expect(v.variants.filter((x) => known.has(x.prompt_id))).toHaveLength(known.size);
    }
    const bornView = await viewOf(peers[0]!, 'born_in_outage', MODEL);
    expect(sum(bornView)).toBe(1);
  }, 600_000);
});
