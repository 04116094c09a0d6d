/**
 * The closed loop as a service: experiments keyed by (name, model) that
 * serve a prompt (`choose`), count what the app reports (`track`: the
 * outcome edge, every `track_execution` passes here), answer what they
 * hold (`get`, `list`) and take operators' actions (`act`).
 *
 * One experiment is one state, whichever sidecar serves it: the store holds
 * it (store/experimentRecords.ts) and every sidecar on the database serves
 * from its own view (view.ts), so the hot path touches no database. A view
 * follows the store within the staleness bound (freshness.ts); an outcome
 * is counted in the store in the statement that stores its row, and the
 * totals it returns go straight into the storing sidecar's view; one
 * sidecar at a time decides (decider.ts). A new experiment, or a new base
 * prompt, is the one choice that writes before it serves (through group
 * commit: journaled while the database is away, so serving goes on).
 */
import type { Logger } from 'pino';
import { OpError } from '../contract/errors.js';
import type { Learner } from '../learning/learner.js';
import type { Scorer } from '../learning/scorer.js';
import type { EmbeddingService } from '../learning/embeddings.js';
import { promptIdOf } from '../optimizer/evaluators.js';
import { TABLES, type EntryRow } from '../store/entries.js';
import type { ExperimentChange, ExperimentSnapshot, HistoryRow } from '../store/experimentRecords.js';
import type { TrackingStore } from '../store/trackingStore.js';
import { isUnavailable } from '../store/db.js';
import { withTimeout } from '../timeouts.js';
import { Decider } from './decider.js';
import { Experiment, experimentKey, keyParts, priorOf, type Candidate, type LoopPolicy, type Variant } from './experiment.js';
import { DEFAULT_OBJECTIVE, NO_TOTALS, type Objective, type VariantTotals } from './objective.js';
import { Freshness, type RefreshRequest } from './freshness.js';
import type { FallbackProposer } from '../optimizer/proposers.js';
import { LoopView } from './view.js';
import { LastKnown } from './lastKnown.js';

export interface ChooseRequest {
  name: string;
  model: string;
  base: string;
  context: Record<string, string>;
  /** What a new experiment optimizes (kept by a new generation of a changed base; changed only by the operator's action). */
  objective?: Objective;
}

export interface Choice {
  prompt: string;
  promptId: string;
  experiment: string;
  model: string;
  generation: number;
  origin: Variant['origin'];
  exploring: boolean;
  leaderId: string;
  variants: number;
}

export interface ExperimentServiceDeps {
  store(): Promise<TrackingStore>;
  scorer(): Promise<Scorer>;
  /** Prompt embeddings (neighbours by meaning in the loop); absent: by wording. */
  embeddings?(): Promise<EmbeddingService>;
  proposer: FallbackProposer;
  learner(): Promise<Learner>;
  log: Logger;
  policy: LoopPolicy;
  /** Wait for a proposal batch before serving the next choice (replayable simulations); default: serve on, add when ready. */
  awaitProposals: boolean;
  /** Experiments held in memory (least recently used dropped past it; the store keeps them). */
  maxExperiments: number;
  /** The most a view may lag the store (ms), when several sidecars share it. */
  stalenessMs: number;
  /** How often a sidecar that does not decide tries to take the decider's lease (ms). */
  leaseRetryMs: number;
  /** The sidecar's data directory: what was last read of each experiment is kept there (absent: not kept). */
  dataDir?: string;
}

export type OperatorAction = 'pin' | 'unpin' | 'reset' | 'stop' | 'resume' | 'objective';

/** Whether a tracking entry reports a closed-loop outcome: an execution whose metadata, or a rating whose context, names an experiment. */
export const reportsOutcome = (row: EntryRow): boolean => (row.kind === 'execution' || row.kind === 'feedback') && typeof row.meta?.experiment === 'string';

const column = (name: string): number => TABLES.execution.columns.indexOf(name);
const EXEC = { ms: column('execution_time_ms'), success: column('success'), score: column('score'), cost: column('cost'), input: column('input_tokens'), output: column('output_tokens') };
const RATING = TABLES.feedback.columns.indexOf('rating');

/** What one outcome adds to its variant's totals (as the store's counting triggers add it). */
export function outcomeDelta(row: EntryRow, objective: Objective): VariantTotals {
  const v = row.values;
  if (row.kind === 'feedback') {
    const s = Math.min(1, Math.max(0, Number(v[RATING]) / 5));
    return { ...NO_TOTALS, scored: 1, score_sum: s, score_sq: s * s };
  }
  const num = (i: number): number | null => (typeof v[i] === 'number' ? (v[i] as number) : null);
  const success = v[EXEC.success] === true;
  const s = num(EXEC.score) ?? (success ? 1 : 0);
  const cost = num(EXEC.cost);
  const input = num(EXEC.input);
  const output = num(EXEC.output);
  const ms = num(EXEC.ms) ?? 0;
  return {
    successes: success ? 1 : 0,
    count: 1,
    scored: 1,
    score_sum: s,
    score_sq: s * s,
    cost_n: cost === null ? 0 : 1,
    cost_sum: cost ?? 0,
    cost_sq: (cost ?? 0) ** 2,
    tokens_n: input === null && output === null ? 0 : 1,
    tokens_in: input ?? 0,
    tokens_out: output ?? 0,
    latency_sum: ms,
    latency_sq: ms * ms,
    over_latency: objective.max_latency_ms_p90 !== null && ms > objective.max_latency_ms_p90 ? 1 : 0,
  };
}

const MAX_PROMPT_CHARS = 100_000;
/** How long an operator's action that failed as `unavailable` waits for its read of the store before answering. */
const ACT_RELOAD_WAIT_MS = 2_000;
/** The most models of one experiment name one `experiment` reply carries (each with every variant's text). */
export const MAX_MODELS_PER_REPLY = 100;

export class ExperimentService {
  private readonly view: LoopView;
  private readonly decider: Decider;
  private freshness: Freshness | undefined;
  /** What was last read of each experiment, on disk: served by a sidecar restarted while the database is away (PostgreSQL only). */
  private lastKnown: LastKnown | undefined;
  /** First uses under way (a new experiment or base is written once however many callers ask at once). */
  private readonly opening = new Map<string, Promise<Experiment>>();
  /** The last caller context per experiment (the proposer may use it). */
  private readonly contexts = new Map<string, Record<string, string>>();
  /** Experiments whose view counts outcomes the store has not counted yet (journaled while the database was away). */
  private readonly provisional = new Set<string>();
  /** Experiments served from what was last read of them, each with its next read of the store. */
  private readonly fromFile = new Map<string, NodeJS.Timeout>();
  private closed = false;
  private learner: Learner | undefined;
  /** Reads of an experiment under way because an outcome named what this view lacks (catchUp), one per experiment. */
  private readonly catchingUp = new Map<string, Promise<Experiment | undefined>>();
  /** `caught_up`: outcomes that named an experiment, generation or variant this view had not heard of yet, matched after reading the store (catchUp). */
  readonly figures = { choices: 0, outcomes: 0, duplicate_outcomes: 0, unmatched_outcomes: 0, caught_up: 0, journaled_outcomes: 0 };

  private constructor(
    private readonly deps: ExperimentServiceDeps,
    private readonly store: TrackingStore,
  ) {
    this.view = new LoopView(
      deps.policy,
      deps.maxExperiments,
      (key) => this.decider.isBusy(key),
      // Per-experiment state beside the view is bounded by it: a made-up name's context leaves with it.
      (key) => {
        this.contexts.delete(key);
        this.provisional.delete(key);
        this.decider.forget(key);
      },
      (s) => this.lastKnown?.remember(s),
    );
    this.decider = new Decider({
      store,
      scorer: deps.scorer,
      ...(deps.embeddings === undefined ? {} : { embeddings: deps.embeddings }),
      proposer: deps.proposer,
      log: deps.log,
      policy: deps.policy,
      view: this.view,
      contextOf: (key) => this.contexts.get(key) ?? {},
      retryMs: deps.leaseRetryMs,
      maxExperiments: deps.maxExperiments,
      reload: (key) => void this.reload(key),
    });
  }

  /** Serve from the store's state: experiments load on first use; this sidecar decides when it holds (or takes) the lease. */
  static async start(deps: ExperimentServiceDeps): Promise<ExperimentService> {
    const store = await deps.store();
    const svc = new ExperimentService(deps, store);
    if (store.backend === 'postgres') {
      if (deps.dataDir !== undefined) svc.lastKnown = await LastKnown.open(deps.dataDir, store.db.schema, deps.maxExperiments, deps.log);
      svc.freshness = new Freshness(store, deps.log, deps.stalenessMs, (what) => svc.refresh(what));
      await svc.freshness.start().catch((err: unknown) => deps.log.warn({ err: (err as Error).message }, 'not following other sidecars\' closed-loop changes yet; refreshing by the clock'));
    }
    store.onRecovered(() => void svc.afterOutage());
    // A replayable simulation (awaitProposals) knows whether this sidecar decides before its first choice:
    // on PostgreSQL the lease is a query away, and a choice served before it would not wait for proposals.
    const firstTry = svc.decider.start();
    if (deps.awaitProposals) await firstTry;
    return svc;
  }

  /** Whether this sidecar decides the closed loop now (holds the lease). */
  get deciding(): boolean {
    return this.decider.deciding;
  }

  async choose(req: ChooseRequest): Promise<Choice> {
    const key = experimentKey(req.name, req.model);
    let exp = this.view.get(key);
    // The same base text as before is the common case: compare text, hash only when it changed.
    if (exp === undefined || exp.base.text !== req.base) {
      exp = await this.open(key, req, exp);
      // Opened meanwhile for another base (a request of the app's previous release, during a rolling deploy):
      // this request's base once more, never a variant of another base, whose variables may differ.
      if (exp.base.text !== req.base) exp = await this.open(key, req, exp);
    } else this.view.touch(exp);
    if (req.context !== this.contexts.get(key)) this.contexts.set(key, req.context);
    if (this.decider.deciding) {
      this.decider.serving(exp);
      if (this.deps.awaitProposals) {
        // Work that ends may start more (the experiment moved meanwhile): wait until none is left.
        for (let p = this.decider.pending(key); p !== undefined; p = this.decider.pending(key)) await p;
        exp = this.view.get(key) ?? exp;
      }
    }
    const { variant, exploring } = exp.choose();
    this.figures.choices++;
    return {
      prompt: variant.text,
      promptId: variant.id,
      experiment: exp.name,
      model: exp.model,
      generation: exp.generation,
      origin: variant.origin,
      exploring,
      leaderId: exp.leader.id,
      variants: exp.active.length,
    };
  }

  /**
   * Fleet simulations (several sidecars in one process, the bench's fleet mode): wait until this
   * sidecar has nothing of the experiment's in progress (a proposal batch, decisions being written).
   */
  quiet(name: string, model: string): Promise<void> {
    return this.decider.quiet(experimentKey(name, model));
  }

  /**
   * Fleet simulations: take the store's state of the experiment now, as a notice of another
   * sidecar's outcomes or decisions would bring it (its counts; every variant when its revision moved).
   */
  readNow(name: string, model: string): Promise<void> {
    return this.refresh(new Set([experimentKey(name, model)]));
  }

  /** First use here (load it from the store, or start it), or a new base prompt (a new generation). */
  private open(key: string, req: ChooseRequest, held: Experiment | undefined): Promise<Experiment> {
    let p = this.opening.get(key);
    if (p === undefined) {
      p = this.load(req, held).finally(() => this.opening.delete(key));
      this.opening.set(key, p);
    }
    return p;
  }

  private async load(req: ChooseRequest, held: Experiment | undefined): Promise<Experiment> {
    if (req.base.length > MAX_PROMPT_CHARS) throw new OpError('bad_request', `prompt: expected at most ${MAX_PROMPT_CHARS} characters`);
    const baseId = promptIdOf(req.base);
    let stored: ExperimentSnapshot | undefined;
    if (held === undefined) {
      try {
        stored = (await this.store.experiments.load([{ name: req.name, model: req.model }]))[0];
      } catch (err) {
        if (!isUnavailable(err)) throw err;
        // The database is away: what this sidecar last read of it (its variants, states and leader), for this base;
        // else the base of a generation this sidecar starts, written to the journal. Either is replaced by the store's
        // state once it answers (provisional: read again after the outage).
        const known = this.lastKnown?.recall(req.name, req.model);
        if (known !== undefined && known.row.base_prompt_id === baseId) {
          const exp = this.view.put(Experiment.fromSnapshot(known, this.deps.policy));
          this.provisional.add(exp.key);
          this.readFromStoreSoon(exp.key);
          return exp;
        }
      }
      if (stored !== undefined && stored.row.base_prompt_id === baseId) return this.view.adopt(stored);
    } else if (held.base.id === baseId) return held;
    const generation = Math.max(held?.generation ?? 0, stored?.row.generation ?? 0) + 1;
    return this.startGeneration(req, baseId, generation, held, stored?.row.objective);
  }

  private async startGeneration(req: ChooseRequest, baseId: string, generation: number, previous: Experiment | undefined, stored?: Objective): Promise<Experiment> {
    const base: Candidate = { id: baseId, text: req.base, origin: 'base', predicted: null };
    const objective = previous?.objective ?? stored ?? req.objective ?? DEFAULT_OBJECTIVE;
    const prior = priorOf(base, this.deps.policy);
    const receipt = await this.store.writeGeneration({
      name: req.name,
      model: req.model,
      generation,
      base: { prompt_id: baseId, text: req.base, origin: 'base', prior_alpha: prior.priorAlpha, prior_beta: prior.priorBeta, predicted: null },
      objective,
    });
    if (previous !== undefined) this.deps.log.info({ experiment: req.name, model: req.model, generation }, 'new generation of the experiment');
    if (receipt.status !== 'journaled') {
      // Another sidecar may have started it first: serve what the store holds.
      const stored = (await this.store.experiments.load([{ name: req.name, model: req.model }]).catch(() => []))[0];
      if (stored !== undefined) {
        const exp = this.view.adopt(stored);
        this.decider.poke(exp);
        return exp;
      }
    }
    return this.view.put(new Experiment(req.name, req.model, generation, base, this.deps.policy, objective));
  }

  /**
   * Store a tracking entry; for an execution whose metadata names an
   * experiment (a closed-loop outcome) the store counts it for its variant
   * in the same statement, once per entry id, and the totals it returns go
   * into this sidecar's view; one naming what the view has not heard of yet
   * (another sidecar served or decided it a moment ago) has the view read
   * that experiment from the store first (catchUp). An outcome of an
   * experiment, generation or prompt id the loop does not know is stored
   * like any execution and counted nowhere.
   */
  async track(row: EntryRow): Promise<void> {
    const key = reportsOutcome(row) ? this.outcomeKey(row) : undefined;
    const receipt = await this.store.write(row);
    if (key === undefined) return;
    const viewKey = experimentKey(key.experiment, key.model);
    const exp = this.view.get(viewKey);
    const promptId = String(row.values[1]);
    if (receipt.status === 'duplicate') {
      this.figures.duplicate_outcomes++;
      return;
    }
    // Counted in the store whatever the view holds; it moves this view when the experiment, generation and variant are the ones it serves.
    let here = exp !== undefined && (key.generation ?? exp.generation) === exp.generation && exp.variants.has(promptId) ? exp : undefined;
    // An experiment, generation or variant this view has not heard of yet (another sidecar served or decided it a moment ago): take the store's state now.
    if (here === undefined && receipt.status === 'stored' && (exp === undefined || (key.generation ?? exp.generation) >= exp.generation))
      here = await this.catchUp(viewKey, key.generation, promptId);
    if (here === undefined) {
      this.figures.unmatched_outcomes++;
      return;
    }
    if (receipt.totals !== undefined) {
      if (receipt.totals.generation === here.generation) here.recordTotals(promptId, receipt.totals);
      this.receiptsDuringReload?.get(here.key)?.set(promptId, receipt.totals);
    } else if (receipt.status === 'journaled') {
      // Counted here until the journal reaches the store, which then counts it once (see afterOutage).
      here.recordOutcome(promptId, outcomeDelta(row, here.objective));
      this.figures.journaled_outcomes++;
      this.provisional.add(here.key);
    }
    this.figures.outcomes++;
    this.decider.poke(here);
    // The learner is looked up once, not a promise per outcome on the hot path.
    if (this.learner !== undefined) this.learner.noteOutcomes(1);
    else
      void this.deps.learner().then((l) => {
        this.learner = l;
        l.noteOutcomes(1);
      }, () => undefined);
  }

  /**
   * The experiment as the store holds it, for an outcome naming what this
   * view lacks (the experiment, a newer generation, a variant): read once
   * for however many such outcomes arrive together; the read comes after
   * the outcome's commit, so its counts include it. Undefined when the store
   * lacks it too (an experiment nobody started, an older generation, a
   * prompt id that was never a variant) or cannot be read.
   */
  private async catchUp(key: string, generation: number | null, promptId: string): Promise<Experiment | undefined> {
    let reading = this.catchingUp.get(key);
    if (reading === undefined) {
      reading = this.reload(key).finally(() => this.catchingUp.delete(key));
      this.catchingUp.set(key, reading);
    }
    const now = await reading;
    if (now === undefined || (generation ?? now.generation) !== now.generation || !now.variants.has(promptId)) return undefined;
    this.figures.caught_up++;
    return now;
  }

  /** The experiment an execution reports on, from its metadata (`experiment`, `model`, `generation`; without one, the current generation). */
  private outcomeKey(row: EntryRow): { experiment: string; model: string; generation: number | null } | undefined {
    const m = row.meta;
    if (m === undefined || typeof m.experiment !== 'string') return undefined;
    const g = m.generation === undefined ? undefined : Number(m.generation);
    return { experiment: m.experiment, model: typeof m.model === 'string' ? m.model : 'default', generation: g !== undefined && Number.isSafeInteger(g) ? g : null };
  }

  /** Refresh what other sidecars changed: counts into the views, full snapshots where the state moved. */
  private async refresh(what: RefreshRequest): Promise<void> {
    const deciding = this.decider.deciding;
    const keys = what === 'all' ? this.view.keys() : [...what].filter((k) => deciding || this.view.get(k) !== undefined);
    if (keys.length === 0) return;
    const counts = await this.store.experiments.counts(keys.map(keyParts));
    const stale: Array<{ name: string; model: string }> = [];
    for (const c of counts) {
      const exp = this.view.get(experimentKey(c.row.name, c.row.model));
      if (exp === undefined) {
        stale.push(c.row);
        continue;
      }
      const r = exp.refresh(c);
      if (r.needsSnapshot) stale.push(c.row);
      else if (r.moved) this.decider.poke(exp);
    }
    if (stale.length === 0) return;
    for (const s of await this.store.experiments.load(stale.map((r) => ({ name: r.name, model: r.model })))) this.decider.poke(this.decider.adoptRead(s));
  }

  /** Load one experiment as the store holds it into the view (a decision its view assumed was not written, an outcome it could not match); undefined when the store has none or cannot be read. */
  private async reload(key: string): Promise<Experiment | undefined> {
    try {
      const s = (await this.store.experiments.load([keyParts(key)]))[0];
      return s === undefined ? undefined : this.decider.adoptRead(s);
    } catch (err) {
      this.deps.log.debug({ err: (err as Error).message }, 'experiment not reloaded; the next refresh does');
      return undefined;
    }
  }

  /**
   * An experiment served from what was last read of it (the store could not be read): read from the store
   * every staleness bound until it answers, then replaced by what it holds (dropped when it holds nothing:
   * a database recreated, another one under the same schema). Read failures this serves through need not
   * be an outage the tracking writes see (a server refusing new connections), so no recovery would come.
   */
  private readFromStoreSoon(key: string): void {
    if (this.fromFile.has(key)) return;
    const timer = setTimeout(() => {
      this.fromFile.delete(key);
      if (this.closed || this.view.get(key) === undefined) return;
      this.store.experiments.load([keyParts(key)]).then(
        ([s]) => {
          const held = this.view.get(key);
          if (this.closed || held === undefined) return;
          if (s === undefined) this.view.drop(key);
          // A generation this sidecar started meanwhile (journaled, not yet in the store) stays; decisions it is writing stay assumed.
          else if (held.generation > s.row.generation) return;
          else if (this.decider.writingDecisions(key)) this.decider.adoptRead(s);
          else this.decider.poke(this.view.put(Experiment.fromSnapshot(s, this.deps.policy)));
        },
        () => this.readFromStoreSoon(key),
      );
    }, this.deps.stalenessMs).unref();
    this.fromFile.set(key, timer);
  }

  /**
   * While `afterOutage` reads the store, the newest totals each outcome's
   * receipt gave, by experiment and variant: a receipt that lands between
   * the read and the view's replacement is not undone by it.
   */
  private receiptsDuringReload: Map<string, Map<string, VariantTotals & { generation: number }>> | undefined;
  private reloadingAfterOutage: Promise<void> = Promise.resolve();

  /** The journal reached the store: what this sidecar counted meanwhile is now counted there; take the store's counts. */
  private afterOutage(): Promise<void> {
    // One reload at a time: each has the receipts of its own read.
    this.reloadingAfterOutage = this.reloadingAfterOutage.then(() => this.reloadAfterOutage());
    return this.reloadingAfterOutage;
  }

  private async reloadAfterOutage(): Promise<void> {
    const keys = [...this.provisional];
    this.provisional.clear();
    if (keys.length === 0) return;
    const receipts = new Map(keys.map((k) => [k, new Map<string, VariantTotals & { generation: number }>()]));
    this.receiptsDuringReload = receipts;
    try {
      const snaps = await this.store.experiments.load(keys.map(keyParts));
      for (const s of snaps) {
        // Replaced, not merged: the provisional counts (some of them maybe duplicates the store counted once) go.
        const exp = Experiment.fromSnapshot(s, this.deps.policy);
        for (const [promptId, t] of receipts.get(exp.key) ?? []) if (t.generation === exp.generation) exp.recordTotals(promptId, t);
        this.view.put(exp);
      }
    } catch (err) {
      for (const k of keys) this.provisional.add(k);
      this.deps.log.warn({ err: (err as Error).message }, 'closed-loop counts not reloaded after the outage; retried at the next recovery');
    } finally {
      this.receiptsDuringReload = undefined;
    }
  }

  /**
   * Every (experiment, model) of that name, as this sidecar's view holds it
   * (loaded from the store if it holds none); past MAX_MODELS_PER_REPLY
   * models a name needs its model named (a reply carries every variant's text).
   */
  async get(name: string, model?: string): Promise<Experiment[]> {
    let all = [...this.view.values()].filter((e) => e.name === name && (model === undefined || e.model === model));
    if (all.length === 0 || model === undefined) {
      // Models this sidecar has not served yet are in the store.
      const stored = await this.store.experiments.named(name, MAX_MODELS_PER_REPLY + 1, model);
      if (stored.length > MAX_MODELS_PER_REPLY)
        throw new OpError('bad_request', `experiment ${JSON.stringify(name)} runs for more than ${MAX_MODELS_PER_REPLY} models: name one (model:)`);
      const held = new Set(all.map((e) => e.key));
      all = [...all, ...stored.filter((s) => !held.has(experimentKey(s.row.name, s.row.model))).map((s) => this.view.adopt(s))];
    }
    if (all.length === 0) throw new OpError('not_found', `no experiment named ${JSON.stringify(name)}${model === undefined ? '' : ` for model ${JSON.stringify(model)}`}`);
    return all.sort((a, b) => (a.model < b.model ? -1 : a.model > b.model ? 1 : 0));
  }

  /** Every experiment the store holds (at most `limit`, most recently changed first), in brief. */
  async list(limit = 1_000): Promise<Experiment[]> {
    const snaps = await this.store.experiments.load(undefined, limit);
    return snaps.map((s) => this.view.get(experimentKey(s.row.name, s.row.model)) ?? Experiment.fromSnapshot(s, this.deps.policy));
  }

  /**
   * An operator's action, applied in the store in a transaction holding the
   * experiment's row (so it never interleaves with a decision), checked
   * against what it finds there: a banned or retired variant is pinned only
   * with `force`; a prompt id that is not a variant of the generation is
   * refused.
   */
  async act(exp: Experiment, action: OperatorAction, opts: OperatorOptions = {}): Promise<Experiment> {
    const snap = await this.store.experiments
      .change(
        (fn) => this.store.db.transaction(fn),
        { name: exp.name, model: exp.model },
        (s) => operatorChange(s, action, opts),
        (q, rows) => this.store.writeEntriesIn(q, rows),
      )
      .catch(async (err: unknown) => {
        // Cut at its COMMIT, the action may be in the store all the same: the view reads what is there (once), before the
        // caller hears `unavailable` (an `experiment` asked right after shows it), unless the read takes long (the network silent).
        if (isUnavailable(err)) await withTimeout(this.reload(exp.key), ACT_RELOAD_WAIT_MS).catch(() => undefined);
        throw err;
      });
    if (snap === undefined) throw new OpError('not_found', `no experiment named ${JSON.stringify(exp.name)} for model ${JSON.stringify(exp.model)}`);
    const after = this.view.adopt(snap);
    this.decider.poke(after);
    return after;
  }

  /** The history of an experiment's current generation: snapshots of its counts and its decisions, oldest first. */
  history(exp: Experiment): Promise<HistoryRow[]> {
    return this.store.experiments.history({ name: exp.name, model: exp.model, generation: exp.generation });
  }

  get loaded(): number {
    return this.view.size;
  }

  /** Counters for `stats`. */
  stats(): Record<string, number | boolean> {
    return {
      ...this.figures,
      ...this.decider.figures,
      ...(this.freshness?.figures ?? {}),
      deciding: this.decider.deciding,
      experiments: this.view.size,
      evicted: this.view.evicted,
      ...(this.freshness === undefined ? {} : { lag_ms: this.freshness.lagMs }),
    };
  }

  /** Wait for decisions and proposal batches in progress (tests, shutdown). */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.opening.values()]);
    await this.decider.settle();
  }

  /** Stop: experiments being opened are opened, decisions being written are written; proposal batches in progress are abandoned (Decider.close). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.fromFile.values()) clearTimeout(t);
    this.fromFile.clear();
    await Promise.allSettled([...this.opening.values()]);
    await this.freshness?.close();
    await this.decider.close();
    await this.lastKnown?.close();
  }
}

/** What an operator's action may say besides its kind: the variant to pin, `force` for a retired or banned one, the new objective, the generation it is meant for. */
export interface OperatorOptions {
  promptId?: string;
  force?: boolean;
  objective?: Objective;
  /** Applied only while the experiment is at this generation (else `conflict`): a retried reset starts one generation, not two. */
  generation?: number;
}

/** What an operator's action changes, checked against the locked state (throws when it does not apply). */
export function operatorChange(s: ExperimentSnapshot, action: OperatorAction, opts: OperatorOptions): ExperimentChange {
  if (opts.generation !== undefined && opts.generation !== s.row.generation)
    throw new OpError('conflict', `generation: ${s.row.name} (${s.row.model}) is at generation ${s.row.generation}, not ${opts.generation}: a reset or a new objective started another since; ask again without the action`);
  const variant = (id: string) => {
    const v = s.variants.find((x) => x.prompt_id === id && x.state !== 'reserve');
    if (v === undefined) throw new OpError('not_found', `prompt_id: ${id} is not a variant of ${s.row.name} (${s.row.model}), generation ${s.row.generation}`);
    return v;
  };
  if (opts.promptId !== undefined && action !== 'pin') variant(opts.promptId);
  switch (action) {
    case 'pin': {
      const v = variant(opts.promptId ?? s.row.leader_prompt_id ?? s.row.base_prompt_id);
      if ((v.state === 'banned' || v.state === 'retired') && opts.force !== true)
        throw new OpError('conflict', `prompt_id: ${v.prompt_id} was ${v.state} by the loop (${v.state === 'banned' ? 'worse than the base with 95% confidence' : 'unlikely to beat the leader'}); pass force: true to serve it anyway`);
      return { fields: { pinned_prompt_id: v.prompt_id } };
    }
    case 'unpin':
      return { fields: { pinned_prompt_id: null } };
    case 'stop':
      return { fields: { status: 'stopped' } };
    case 'resume':
      return { fields: { status: 'running' } };
    case 'reset':
    case 'objective': {
      // A new objective judges every variant anew: a new generation from the same base.
      const base = variant(s.row.base_prompt_id);
      const objective = action === 'objective' ? (opts.objective ?? s.row.objective) : s.row.objective;
      return { generation: { name: s.row.name, model: s.row.model, generation: s.row.generation + 1, base: { prompt_id: base.prompt_id, text: base.text, origin: 'base', prior_alpha: base.prior_alpha, prior_beta: base.prior_beta, predicted: base.predicted }, objective } };
    }
  }
}
