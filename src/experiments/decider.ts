/**
 * The one sidecar that decides the closed loop for every sidecar sharing
 * the database: proposals and their screening, admissions from the
 * reserve, retirements, bans and leader changes. It holds a lease (a
 * PostgreSQL advisory lock on a connection of its own, `loop-decider` in
 * the store's schema); the others try to take it every `retryMs` and one
 * does within that when the holder dies (its connection closes with it).
 * Its decisions are written on pooled connections, each in a transaction
 * that first checks the lease's lock is still held, then locks the
 * experiment's row and checks the decision still holds against what it
 * finds there (a variant still active, the leader still the one it
 * replaces, the generation still current), so a
 * decider that lost its lease, or decided on a stale view, changes
 * nothing. It adopts what the store then holds; the others follow through
 * their refreshes. So there is one stream of LLM requests per experiment,
 * the variant cap per generation holds fleet-wide, and the leader changes
 * only by the confidence rule, never because a sidecar restarted.
 *
 * While the database is away nobody holds the lease and nothing is
 * decided: every sidecar serves what was decided before, and counts what
 * it stores (the journal).
 */
import type { Logger } from 'pino';
import { unstorable } from '../contract/args.js';
import { ShuttingDownError } from '../engine.js';
import type { Scorer } from '../learning/scorer.js';
import { promptIdOf } from '../optimizer/evaluators.js';
import { isUnavailable, type Lease } from '../store/db.js';
import { abResultRow, evolutionRow } from '../store/entries.js';
import type { ExperimentChange, ExperimentSnapshot } from '../store/experimentRecords.js';
import type { TrackingStore } from '../store/trackingStore.js';
import { decisionChange, experimentKey, poolRoom, proposing, roomIn, successRate, type Candidate, type Decision, type Experiment, type LoopPolicy } from './experiment.js';
import type { FallbackProposer } from '../optimizer/proposers.js';
import { describeObjective, type Objective } from './objective.js';
import type { LoopView } from './view.js';
import { nearDuplicate, type EmbeddingService } from '../learning/embeddings.js';
import { PromptVectors } from './vectors.js';

const MAX_PROMPT_CHARS = 100_000;
/** Changes written in one transaction at most. */
const MAX_CHANGES_PER_WRITE = 128;

export interface DeciderDeps {
  store: TrackingStore;
  scorer(): Promise<Scorer>;
  /** Prompt embeddings, for neighbours by meaning (absent: by wording). */
  embeddings?(): Promise<EmbeddingService>;
  proposer: FallbackProposer;
  log: Logger;
  policy: LoopPolicy;
  view: LoopView;
  /** The caller context last seen for an experiment (what the proposer may use besides the base). */
  contextOf(key: string): Record<string, string>;
  /** How often a sidecar without the lease tries to take it. */
  retryMs: number;
  /** Load an experiment from the store again (a decision this view assumed was not written). */
  reload(key: string): void;
  /** Experiments loaded when the lease is taken (most recently changed first). */
  maxExperiments: number;
}

export interface DeciderFigures {
  leases_taken: number;
  leases_lost: number;
  batches: number;
  proposals_screened: number;
  proposals_rejected: number;
  retired: number;
  banned: number;
  leader_changes: number;
  admitted: number;
  /** Proposals not tried: near-duplicates in meaning of a known variant or of another proposal of their batch. */
  near_duplicates: number;
  write_errors: number;
}

export class Decider {
  private lease: Lease | undefined;
  private retry: NodeJS.Timeout | undefined;
  private closed = false;
  /** Work in progress per experiment (one decision write or batch at a time). */
  private readonly busy = new Map<string, Promise<void>>();
  /** Experiments that moved while busy: looked at again when the work ends. */
  private readonly again = new Set<string>();
  /** Outcomes at each experiment's last history snapshot. */
  private readonly snapshotAt = new Map<string, number>();
  /** Decision writes in flight per experiment (their decisions are assumed in the view meanwhile). */
  private readonly decisionWrites = new Map<string, number>();
  private readonly writing = new Set<Promise<void>>();
  /** Aborted at close: a proposal batch in progress (an LLM request, embeddings, screening) stops at its next step and writes nothing. */
  private readonly stopping = new AbortController();
  /** The group commit of changes in progress, if any. */
  private flushDone: Promise<void> | undefined;
  readonly figures: DeciderFigures = { leases_taken: 0, leases_lost: 0, batches: 0, proposals_screened: 0, proposals_rejected: 0, retired: 0, banned: 0, leader_changes: 0, admitted: 0, near_duplicates: 0, write_errors: 0 };
  private readonly vectors: PromptVectors;

  constructor(private readonly deps: DeciderDeps) {
    this.vectors = new PromptVectors(deps.policy.neighbourBandwidth > 0 ? deps.embeddings : undefined, deps.log);
  }

  /** An experiment left the view: what is kept for it here goes too (a busy one is never dropped). */
  forget(key: string): void {
    this.snapshotAt.delete(key);
    this.again.delete(key);
  }

  /** Whether this sidecar decides now. */
  get deciding(): boolean {
    return this.lease?.held === true;
  }

  isBusy(key: string): boolean {
    return this.busy.has(key);
  }

  /** Whether decisions of the experiment are being written (the view assumes them; the store lacks them yet). */
  writingDecisions(key: string): boolean {
    return this.decisionWrites.has(key);
  }

  /** Try to take the lease now, and again every `retryMs` while another holds it; resolves once the first try ended. */
  start(): Promise<void> {
    return this.acquire();
  }

  private async acquire(): Promise<void> {
    this.retry = undefined;
    if (this.closed || this.deciding) return;
    try {
      const lease = await this.deps.store.lease('loop-decider');
      if (lease !== undefined) {
        if (this.closed) return void (await lease.release());
        this.lease = lease;
        this.figures.leases_taken++;
        lease.onLost(() => this.lost(lease));
        this.deps.log.info('this sidecar now decides the closed loop for every sidecar on the database');
        await this.takeOver();
        return;
      }
    } catch (err) {
      this.deps.log.debug({ err: (err as Error).message }, 'closed-loop lease not taken');
    }
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.closed || this.retry !== undefined) return;
    this.retry = setTimeout(() => void this.acquire(), this.deps.retryMs);
    this.retry.unref();
  }

  private lost(lease: Lease): void {
    if (this.lease !== lease) return;
    this.lease = undefined;
    this.figures.leases_lost++;
    if (!this.closed) this.deps.log.warn('closed-loop lease lost (database connection gone): another sidecar, or this one later, decides');
    this.scheduleRetry();
  }

  /** A new decider starts from what the store holds: every experiment changed lately, looked at once. */
  private async takeOver(): Promise<void> {
    try {
      const snaps = await this.deps.store.experiments.load(undefined, this.deps.maxExperiments);
      for (const s of snaps) this.poke(this.deps.view.adopt(s));
    } catch (err) {
      this.deps.log.warn({ err: (err as Error).message }, 'closed-loop state not loaded at takeover; experiments are looked at as they move');
    }
  }

  /**
   * Look at an experiment whose counts or state moved: the policy's
   * decisions, then proposals when the pool has room. Does nothing unless
   * this sidecar decides; one piece of work per experiment at a time.
   */
  poke(exp: Experiment): void {
    if (!this.deciding || this.closed) return;
    if (this.busy.has(exp.key)) {
      this.again.add(exp.key);
      return;
    }
    if (exp.wantsProposals() === 0 && exp.decisions().length === 0 && !exp.historyDue(this.snapshotAt.get(exp.key) ?? 0)) return;
    const key = exp.key;
    const work = this.step(exp)
      .catch((err: unknown) => {
        // Work abandoned at close fails as its services close under it: not an error of the loop.
        if (this.closed) return;
        this.figures.write_errors++;
        this.deps.log.warn({ err: (err as Error).message, experiment: exp.name, model: exp.model }, 'closed-loop decision not written; the next outcome decides again');
      })
      .finally(() => {
        this.busy.delete(key);
        if (this.again.delete(key)) {
          const cur = this.deps.view.get(key);
          if (cur !== undefined) this.poke(cur);
        }
      });
    this.busy.set(key, work);
  }

  /** A choice was served: propose when the pool has room (decisions follow counts, not choices). */
  serving(exp: Experiment): void {
    if (this.deciding && !this.busy.has(exp.key) && exp.wantsProposals() > 0) this.poke(exp);
  }

  /** The work in progress for an experiment, if any (serving waits for it in replayable simulations). */
  pending(key: string): Promise<void> | undefined {
    return this.busy.get(key);
  }

  /**
   * Until nothing is in progress for an experiment: its work (which, ending, may start more) and the writes of
   * decisions it serves as assumed. Fleet simulations wait on it before another sidecar serves.
   */
  async quiet(key: string): Promise<void> {
    for (;;) {
      const work = this.busy.get(key);
      if (work !== undefined) await work;
      else if (this.decisionWrites.has(key)) await Promise.allSettled([...this.writing]);
      else return;
    }
  }

  /**
   * Decisions are served at once (assumed in the view) and written behind;
   * candidates enter the pool only once written. When a decision makes room
   * for a candidate of the reserve, both go in one write.
   */
  private async step(exp: Experiment): Promise<void> {
    // Ranking the reserve by meaning needs the vectors of the reserve and of the measured variants (cached after the first time).
    if (exp.reserve.length > 0 && exp.wantsProposals() > 0) await this.vectors.ensure([...exp.variants.values(), ...exp.reserve]);
    if (this.closed) return;
    const decisions = exp.decisions();
    if (decisions.length > 0) exp.assume(decisions);
    // The history's snapshot goes with whatever this step writes.
    const snapshot = exp.historyDue(this.snapshotAt.get(exp.key) ?? 0) ? { history: [exp.historyEntry('snapshot')] } : undefined;
    if (snapshot !== undefined) this.snapshotAt.set(exp.key, exp.outcomes);
    const room = exp.wantsProposals();
    const chosen = room > 0 ? exp.fromReserve(room, this.vectors.of) : [];
    if (chosen.length > 0) {
      // Checked against the locked state: an operator's stop or pin committed meanwhile admits nothing, and no more than the pool's room
      // there once this write's own retirements and bans are out (the decisions that still hold against it).
      const freed = (applied: readonly Decision[]): number => applied.filter((d) => d.kind !== 'leader').length;
      const after = await this.writeDecisions(exp, decisions, (s, applied) =>
        mergeChanges(proposing(s.row.status, s.row.pinned_prompt_id) ? admitting(exp, chosen, roomIn(this.deps.policy, s, freed(applied))) : undefined, snapshot),
      );
      if (after !== undefined) this.figures.admitted += chosen.filter((c) => after.variants.get(c.id)?.state === 'active').length;
      return;
    }
    if (decisions.length > 0) void this.writeDecisions(exp, decisions, () => snapshot);
    else if (snapshot !== undefined) {
      // A snapshot alone records counts and decides nothing: it goes with the next batch of writes, without the experiment's lock.
      this.deps.store.writeHistorySnapshot({ row: { name: exp.name, model: exp.model, generation: exp.generation }, h: snapshot.history[0]! }).catch((err: unknown) => {
        this.deps.log.debug({ err: (err as Error).message, experiment: exp.name }, 'closed-loop history snapshot not written');
      });
    }
    if (room > 0) await this.batch(exp);
  }

  /**
   * Write decisions the view assumed (with `also`, a change that goes in the same transaction, told which of
   * the decisions still hold against the locked state); a failed write reloads the experiment.
   */
  private writeDecisions(
    exp: Experiment,
    decisions: Decision[],
    also: (s: ExperimentSnapshot, applied: readonly Decision[]) => ExperimentChange | undefined,
  ): Promise<Experiment | undefined> {
    const key = exp.key;
    this.decisionWrites.set(key, (this.decisionWrites.get(key) ?? 0) + 1);
    const change = (s: ExperimentSnapshot): ExperimentChange | undefined => {
      const decided = this.decisionChange(exp, s, decisions);
      return mergeChanges(decided.change, also(s, decided.applied));
    };
    let result: Experiment | undefined;
    const w = this.write(exp, change, true)
      .then((after) => {
        result = after;
        if (after === undefined && decisions.length > 0) this.deps.reload(key);
      })
      .catch((err: unknown) => {
        this.figures.write_errors++;
        this.deps.log.warn({ err: (err as Error).message, experiment: exp.name, model: exp.model }, 'closed-loop decision not written; the experiment is reloaded from the store');
        this.deps.reload(key);
      })
      .finally(() => {
        this.writing.delete(w);
        const n = (this.decisionWrites.get(key) ?? 1) - 1;
        if (n > 0) this.decisionWrites.set(key, n);
        else this.decisionWrites.delete(key);
      });
    this.writing.add(w);
    return w.then(() => result);
  }

  /** The decisions that still hold against the locked state (`applied`), as a change with the entries that record them. */
  private decisionChange(exp: Experiment, s: ExperimentSnapshot, decisions: Decision[]): { change: ExperimentChange | undefined; applied: Decision[] } {
    const { change, applied } = decisionChange(s, decisions);
    if (applied.length === 0) return { change: undefined, applied };
    change.history = applied.map((d) => exp.historyEntry(d.kind, d.kind === 'leader' ? d.to.id : d.variant.id));
    change.entries = applied.map((d) => {
      if (d.kind === 'leader') {
        this.figures.leader_changes++;
        return evolutionRow({
          original_prompt_id: d.from.id,
          evolved_prompt_id: d.to.id,
          evolution_type: 'optimization',
          performance_improvement: d.improvement,
          evolution_metadata: {
            experiment: exp.name,
            model: exp.model,
            generation: String(exp.generation),
            origin: d.to.origin,
            from_rate: successRate(d.from).toFixed(4),
            from_count: String(d.from.count),
            to_rate: successRate(d.to).toFixed(4),
            to_count: String(d.to.count),
            confidence: d.confidence.toFixed(4),
            measured: 'outcomes',
          },
        });
      }
      if (d.kind === 'retired') this.figures.retired++;
      else this.figures.banned++;
      return abResultRow({
        test_id: `${exp.name}/${exp.model}/${exp.generation}`,
        variant_a_prompt_id: d.against.id,
        variant_b_prompt_id: d.variant.id,
        winner: 'a',
        confidence_level: Math.min(1, Math.max(0, d.confidence)),
        sample_size: d.against.count + d.variant.count,
        test_duration: 0,
        metrics: { a_rate: successRate(d.against), a_count: d.against.count, b_rate: successRate(d.variant), b_count: d.variant.count, banned: d.kind === 'banned' ? 1 : 0 },
      });
    });
    return { change, applied };
  }

  /** Ask the proposer for a batch, keep what keeps the variables, screen it with the scorer, and write it. */
  // The batch outlives the request that triggered it: it is not cancelled with that request.
  private async batch(exp: Experiment): Promise<void> {
    const tried = [...exp.variants.values()]
      .filter((v) => v.state !== 'banned')
      .sort((a, b) => exp.estimate(b).mean - exp.estimate(a).mean)
      .map((v) => ({ text: v.text, score: exp.value(v), count: v.count }));
    const caller = this.deps.contextOf(exp.key);
    const { texts, kind } = await this.deps.proposer.proposeWithKind({
      base: exp.base.text,
      tried,
      n: this.deps.policy.batchSize,
      temperature: 1,
      round: exp.proposalsMade,
      context: { language: caller.language, domain: caller.domain, task: exp.name },
      // The app fills in exactly the base's variables: a candidate that drops, adds or renames one is never tried.
      variables: 'same',
      objective: { valueName: VALUE_NAMES[exp.objective.kind], note: `${describeObjective(exp.objective)}${costsTokens(exp.objective) ? ` The current leader uses about ${tokensOf(exp.leader.text)} tokens.` : ''}` },
      signal: this.stopping.signal,
    });
    if (this.closed) return;
    this.figures.batches++;
    const seen = new Set([...exp.variants.keys(), ...exp.reserve.map((c) => c.id)]);
    // What the store cannot hold (a NUL, a lone surrogate from an LLM) would fail the write it shares with other experiments' decisions.
    let safe = [...new Set(texts)].filter((t) => t.length <= MAX_PROMPT_CHARS && unstorable(t) === undefined && !seen.has(promptIdOf(t)));
    this.figures.proposals_rejected += texts.length - safe.length;
    safe = await this.withoutNearDuplicates(exp, safe);
    if (this.closed) return;
    let predicted: Array<number | null> = safe.map(() => null);
    if (safe.length > 0) {
      try {
        const scorer = await this.deps.scorer();
        // Features v3 read each candidate against the experiment's base (what it is a variant of).
        predicted = (await scorer.score(safe.map((prompt) => ({ prompt, context: { model: exp.model, task: exp.name }, base: exp.base.text })))).p;
      } catch (err) {
        // The engine shutting down (a CLI command that returns while a batch screens) is no fault.
        if (err instanceof ShuttingDownError) return;
        this.deps.log.warn({ err: (err as Error).message }, 'no scorer for screening: proposals enter unranked');
      }
    }
    if (this.closed) return;
    this.figures.proposals_screened += safe.length;
    // Under a reward that weighs the instruction's tokens, a longer candidate is less promising by what it costs.
    const penalty = (text: string): number => (costsTokens(exp.objective) ? exp.objective.cost_weight * exp.objective.input_token_cost * tokensOf(text) : 0);
    const candidates: Candidate[] = safe.map((text, i) => {
      const id = promptIdOf(text);
      const vector = this.vectors.of(id);
      const neighbours = vector === undefined ? undefined : exp.neighbourPrior(vector, this.vectors.of);
      return { id, text, origin: kind, predicted: predicted[i] ?? null, rank: costsTokens(exp.objective) ? (predicted[i] ?? 0.5) - penalty(text) : null, ...(neighbours === undefined ? {} : { neighbours }) };
    });
    const now = this.deps.view.get(exp.key);
    if (now === undefined || now.generation !== exp.generation) return; // a new generation started meanwhile
    now.noteBatch(candidates.length);
    const room = poolRoom(this.deps.policy, now.active.length, now.variants.size);
    const before = now.active.length;
    // The store's state decides whether the batch still goes in (an operator may have stopped or pinned the experiment while the LLM answered)
    // and how many of it the pool takes (the cap per generation holds even when this view missed a write).
    const after = await this.write(now, (s) => (proposing(s.row.status, s.row.pinned_prompt_id) ? now.batchChange(candidates, Math.min(room, roomIn(this.deps.policy, s)), this.vectors.of) : undefined)).catch((err: unknown) => {
      // Cut at its COMMIT, the batch may be in the store all the same: the view reads what is there (once).
      if (isUnavailable(err)) this.deps.reload(exp.key);
      throw err;
    });
    if (after !== undefined) this.figures.admitted += Math.max(0, after.active.length - before);
  }

  /**
   * A batch without the proposals that mean what a known variant (or an
   * earlier proposal of the batch) means: trying them would spend outcomes
   * on what is measured already. Unchanged when neighbours are not found by
   * meaning or no embedding is at hand.
   */
  private async withoutNearDuplicates(exp: Experiment, texts: string[]): Promise<string[]> {
    if (texts.length === 0 || this.deps.policy.neighbourBandwidth <= 0) return texts;
    const known = [...exp.variants.values(), ...exp.reserve];
    const proposed = texts.map((text) => ({ id: promptIdOf(text), text }));
    if (!(await this.vectors.ensure([...known, ...proposed]))) return texts;
    const kept: string[] = [];
    const keptVectors = known.map((k) => this.vectors.of(k.id)!);
    for (const p of proposed) {
      const v = this.vectors.of(p.id)!;
      if (keptVectors.some((u) => nearDuplicate(u, v))) continue;
      keptVectors.push(v);
      kept.push(p.text);
    }
    this.figures.near_duplicates += texts.length - kept.length;
    return kept;
  }

  /**
   * Write a change through the lease (fenced: a lost lease writes nothing)
   * and adopt what the store then holds. Undefined when this sidecar no
   * longer decides or the experiment moved to another generation. Changes
   * queued in one turn of the event loop share one transaction (group
   * commit for decisions: a hundred experiments deciding at once are one
   * round of statements, not a hundred).
   */
  private write(exp: Experiment, decide: (s: ExperimentSnapshot) => ExperimentChange | undefined, isDecisionWrite = false): Promise<Experiment | undefined> {
    return new Promise((resolve, reject) => {
      this.queued.push({ exp, decide, isDecisionWrite, resolve, reject });
      if (!this.flushing) {
        this.flushing = true;
        this.flushDone = new Promise<void>((r) => setImmediate(r)).then(() => this.flush());
      }
    });
  }

  private readonly queued: Array<{ exp: Experiment; decide: (s: ExperimentSnapshot) => ExperimentChange | undefined; isDecisionWrite: boolean; resolve(e: Experiment | undefined): void; reject(err: unknown): void }> = [];
  private flushing = false;

  private async flush(): Promise<void> {
    const { store } = this.deps;
    while (this.queued.length > 0) {
      const batch = this.queued.splice(0, MAX_CHANGES_PER_WRITE);
      const lease = this.lease;
      if (lease === undefined || !lease.held) {
        for (const b of batch) b.resolve(undefined);
        continue;
      }
      try {
        const snaps = await store.experiments.changeMany(
          (fn) => lease.transaction(fn),
          batch.map((b) => ({ key: { name: b.exp.name, model: b.exp.model, generation: b.exp.generation }, decide: b.decide })),
          (q, rows) => store.writeEntriesIn(q, rows),
        );
        // Writes of one experiment in one transaction: its last snapshot holds what every one of them wrote
        // (the earlier ones' snapshots lack what came after them, yet carry the revision after all of them).
        const keys = batch.map((b) => `${b.exp.key}\u0000${b.exp.generation}`);
        const last = new Map<string, number>();
        const decisionsHere = new Map<string, number>();
        keys.forEach((k, i) => {
          last.set(k, i);
          if (batch[i]!.isDecisionWrite) decisionsHere.set(k, (decisionsHere.get(k) ?? 0) + 1);
        });
        const adopted = new Map([...last].map(([k, i]) => [k, this.adoptWritten(batch[i]!.exp, snaps[i], decisionsHere.get(k) ?? 0)] as const));
        batch.forEach((b, i) => b.resolve(adopted.get(keys[i]!)));
      } catch (err) {
        for (const b of batch) b.reject(err);
      }
    }
    this.flushing = false;
  }

  /**
   * What the store holds after a write (`written` of the experiment's decision writes in it), into the
   * view; decisions still being written (in a later transaction) are assumed there, and not undone meanwhile.
   */
  private adoptWritten(exp: Experiment, snap: ExperimentSnapshot | undefined, written: number): Experiment | undefined {
    if (snap === undefined) return undefined;
    const later = (this.decisionWrites.get(exp.key) ?? 0) - written;
    if (later > 0) {
      for (const v of snap.variants) exp.recordTotals(v.prompt_id, v);
      return exp;
    }
    return this.deps.view.adopt(snap);
  }

  /**
   * A snapshot read outside this decider's writes (a reload, a refresh) into the view. While decisions
   * of its experiment are being written, its counts only: the view assumes those decisions, which the
   * store lacks until they commit, and their write's own snapshot brings the rest (else a retired
   * variant would be served again until then).
   */
  adoptRead(snap: ExperimentSnapshot): Experiment {
    const held = this.deps.view.get(experimentKey(snap.row.name, snap.row.model));
    if (held === undefined || held.generation !== snap.row.generation || !this.writingDecisions(held.key)) return this.deps.view.adopt(snap);
    for (const v of snap.variants) held.recordTotals(v.prompt_id, v);
    return held;
  }

  /** Wait for the work in progress and the decisions being written. */
  async settle(): Promise<void> {
    while (this.busy.size > 0 || this.writing.size > 0) await Promise.allSettled([...this.busy.values(), ...this.writing]);
  }

  /**
   * Stop deciding: decisions being written are written (or fail), proposal
   * batches in progress are abandoned (their LLM request aborted; each
   * stops at its next step and writes nothing), so a sidecar asked to stop
   * does not wait for an LLM or a queue of embeddings.
   */
  async close(): Promise<void> {
    this.closed = true;
    this.stopping.abort();
    this.vectors.close();
    if (this.retry !== undefined) clearTimeout(this.retry);
    while (this.writing.size > 0) await Promise.allSettled([...this.writing]);
    while (this.flushing) await this.flushDone;
    const lease = this.lease;
    this.lease = undefined;
    await lease?.release();
  }
}

const VALUE_NAMES = { success: 'success rate', score: 'mean score', reward: 'mean reward' } as const;

/** Whether the objective charges for the instruction's tokens. */
const costsTokens = (o: Objective): boolean => o.kind === 'reward' && o.cost_weight > 0 && o.input_token_cost > 0;

/** An instruction's tokens, estimated (about four characters a token: no tokenizer of the app's model ships here). */
export const tokensOf = (text: string): number => Math.ceil(text.length / 4);

/** The admission of candidates of the reserve, no more than `room` of them (none: no change). */
function admitting(exp: Experiment, chosen: readonly Candidate[], room: number): ExperimentChange | undefined {
  return room > 0 ? exp.admitChange(chosen.slice(0, room)) : undefined;
}

/** Two changes as one (fields of the second win). */
function mergeChanges(a: ExperimentChange | undefined, b: ExperimentChange | undefined): ExperimentChange | undefined {
  if (a === undefined || b === undefined) return a ?? b;
  const fields = a.fields === undefined && b.fields === undefined ? undefined : { ...a.fields, ...b.fields };
  return {
    ...(fields === undefined ? {} : { fields }),
    add: [...(a.add ?? []), ...(b.add ?? [])],
    moves: [...(a.moves ?? []), ...(b.moves ?? [])],
    entries: [...(a.entries ?? []), ...(b.entries ?? [])],
    history: [...(a.history ?? []), ...(b.history ?? [])],
  };
}
