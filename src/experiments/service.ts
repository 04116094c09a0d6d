/**
 * The closed loop: experiments keyed by (name, model) that serve a prompt
 * (`choose`), count what the app reports (`observe`, fed by
 * `track_execution`), and by themselves ask for proposals, screen them with
 * the learned scorer, retire losers, guard against regressions, record
 * evolutions and A/B results, and feed the learner's continuous training.
 *
 * State lives in memory (the hot path touches no database) and in the
 * store: experiments and variants as rows, outcomes as the ordinary
 * execution rows, so a restart rebuilds every experiment as it was.
 * Persistence runs behind the hot path on one queue, in order.
 */
import type { Logger } from 'pino';
import { OpError } from '../contract/errors.js';
import type { Learner } from '../learning/learner.js';
import type { Scorer } from '../learning/scorer.js';
import { promptIdOf } from '../optimizer/evaluators.js';
import { sameVariables } from '../optimizer/variables.js';
import type { VariantRow } from '../store/experimentRecords.js';
import type { TrackingStore } from '../store/trackingStore.js';
import { Experiment, experimentKey, posteriorMean, successRate, type Candidate, type Decision, type LoopPolicy, type Variant } from './experiment.js';
import type { FallbackProposer } from './proposers.js';

export interface ChooseRequest {
  name: string;
  model: string;
  base: string;
  context: Record<string, string>;
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
  proposer: FallbackProposer;
  learner(): Promise<Learner>;
  log: Logger;
  policy: LoopPolicy;
  /** Wait for a proposal batch before serving the next choice (replayable simulations); default: serve on, add when ready. */
  awaitProposals: boolean;
}

const MAX_PROMPT_CHARS = 100_000;

export class ExperimentService {
  private readonly experiments = new Map<string, Experiment>();
  private readonly pending = new Map<string, Promise<void>>();
  /** Changes not yet in the store, flushed in one transaction per turn of the event loop. */
  private readonly dirtyExperiments = new Map<string, Experiment>();
  private readonly dirtyVariants = new Map<string, { exp: Experiment; v: Variant }>();
  private readonly entries: Array<(store: TrackingStore) => Promise<unknown>> = [];
  private flushing: Promise<void> | undefined;
  private closed = false;
  private learner: Learner | undefined;
  readonly figures = { choices: 0, outcomes: 0, unmatched_outcomes: 0, batches: 0, proposals_screened: 0, proposals_rejected: 0, retired: 0, banned: 0, leader_changes: 0, write_errors: 0 };

  private constructor(private readonly deps: ExperimentServiceDeps) {}

  /** Load every experiment from the store (variants and their outcomes), then serve. */
  static async start(deps: ExperimentServiceDeps): Promise<ExperimentService> {
    const svc = new ExperimentService(deps);
    const store = await deps.store();
    const rows = await store.experiments.loadExperiments();
    const counts = rows.length === 0 ? new Map() : await store.experiments.allOutcomes();
    for (const row of rows) {
      const variants = await store.experiments.loadVariants(row.name, row.model, row.generation);
      const baseRow = variants.find((v) => v.prompt_id === row.base_prompt_id);
      if (baseRow === undefined) continue;
      const exp = new Experiment(row.name, row.model, row.generation, fromRow(baseRow), deps.policy);
      for (const v of variants) if (v.prompt_id !== baseRow.prompt_id) exp.variants.set(v.prompt_id, fromRow(v));
      exp.status = row.status;
      exp.pinned = row.pinned_prompt_id ?? undefined;
      exp.proposalsMade = row.proposals_made;
      const key = `${row.name}\u0000${row.model}\u0000`;
      const merged = new Map<string, { successes: number; count: number }>();
      for (const part of [counts.get(`${key}${row.generation}`), counts.get(`${key}*`)])
        for (const [id, c] of part ?? []) {
          const m = merged.get(id) ?? { successes: 0, count: 0 };
          merged.set(id, { successes: m.successes + c.successes, count: m.count + c.count });
        }
      exp.restoreOutcomes(merged);
      svc.experiments.set(exp.key, exp);
    }
    if (svc.experiments.size > 0) deps.log.info({ experiments: svc.experiments.size }, 'closed-loop experiments restored from the store');
    return svc;
  }

  async choose(req: ChooseRequest): Promise<Choice> {
    let exp = this.experiments.get(experimentKey(req.name, req.model));
    // The same base text as before is the common case: compare text, hash only when it changed.
    if (exp === undefined || exp.base.text !== req.base) {
      const baseId = promptIdOf(req.base);
      if (exp === undefined || exp.base.id !== baseId) exp = this.newGeneration(req, baseId, exp);
    }
    if (this.deps.awaitProposals) await this.pending.get(exp.key);
    this.refill(exp, req.context);
    if (this.deps.awaitProposals) await this.pending.get(exp.key);
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
   * One reported outcome (a `track_execution` whose metadata names the
   * experiment). Unknown experiments and prompt ids are counted nowhere.
   */
  observe(o: { experiment: string; model: string; generation?: number; promptId: string; success: boolean }): void {
    const exp = this.experiments.get(experimentKey(o.experiment, o.model));
    if (exp === undefined || (o.generation !== undefined && o.generation !== exp.generation) || !exp.variants.has(o.promptId)) {
      this.figures.unmatched_outcomes++;
      return;
    }
    this.figures.outcomes++;
    const decisions = exp.observe(o.promptId, o.success);
    if (decisions.length > 0) this.apply(exp, decisions);
    // The learner is looked up once, not a promise per outcome on the hot path.
    if (this.learner !== undefined) this.learner.noteOutcomes(1);
    else
      void this.deps.learner().then((l) => {
        this.learner = l;
        l.noteOutcomes(1);
      }, () => undefined);
  }

  get(name: string, model?: string): Experiment[] {
    const all = [...this.experiments.values()].filter((e) => e.name === name && (model === undefined || e.model === model));
    if (all.length === 0) throw new OpError('not_found', `no experiment named ${JSON.stringify(name)}${model === undefined ? '' : ` for model ${JSON.stringify(model)}`}`);
    return all;
  }

  list(): Experiment[] {
    return [...this.experiments.values()];
  }

  /** Operator actions: pin a variant (serve only it), reset (a new generation from the same base), stop (serve the leader, learn nothing). */
  act(exp: Experiment, action: 'pin' | 'unpin' | 'reset' | 'stop' | 'resume', promptId?: string): Experiment {
    switch (action) {
      case 'pin': {
        const id = promptId ?? exp.leader.id;
        if (!exp.variants.has(id)) throw new OpError('not_found', `prompt_id: ${id} is not a variant of ${exp.name} (${exp.model})`);
        exp.pinned = id;
        break;
      }
      case 'unpin':
        exp.pinned = undefined;
        break;
      case 'stop':
        exp.status = 'stopped';
        break;
      case 'resume':
        exp.status = 'running';
        break;
      case 'reset':
        return this.newGeneration({ name: exp.name, model: exp.model, base: exp.base.text, context: {} }, exp.base.id, exp);
    }
    this.persistExperiment(exp);
    return exp;
  }

  private newGeneration(req: ChooseRequest, baseId: string, previous: Experiment | undefined): Experiment {
    if (req.base.length > MAX_PROMPT_CHARS) throw new OpError('bad_request', `prompt: expected at most ${MAX_PROMPT_CHARS} characters`);
    const generation = (previous?.generation ?? 0) + 1;
    const base = Experiment.variant({ id: baseId, text: req.base, origin: 'base', predicted: null }, this.deps.policy);
    const exp = new Experiment(req.name, req.model, generation, base, this.deps.policy);
    this.experiments.set(exp.key, exp);
    this.pending.delete(exp.key);
    if (previous !== undefined) this.deps.log.info({ experiment: req.name, model: req.model, generation }, 'new generation of the experiment');
    this.persistExperiment(exp);
    this.persistVariants(exp, [base]);
    return exp;
  }

  /** Admit screened candidates from the reserve, or start a proposal batch, when the pool has room. */
  private refill(exp: Experiment, context: Record<string, string>): void {
    const room = exp.wantsProposals();
    if (room === 0 || this.pending.has(exp.key)) return;
    const admitted = exp.admitFromReserve(room);
    if (admitted.length > 0) return this.persistVariants(exp, admitted);
    const p = this.batch(exp, context)
      .catch((err: unknown) => {
        this.deps.log.warn({ err: (err as Error).message, experiment: exp.name }, 'proposal batch failed; serving the current pool');
      })
      .finally(() => {
        if (this.pending.get(exp.key) === p) this.pending.delete(exp.key);
      });
    this.pending.set(exp.key, p);
  }

  // The batch outlives the request that triggered it: it is not cancelled with that request.
  private async batch(exp: Experiment, context: Record<string, string>): Promise<void> {
    const tried = [...exp.variants.values()]
      .filter((v) => v.state !== 'banned')
      .sort((a, b) => posteriorMean(b) - posteriorMean(a))
      .map((v) => ({ text: v.text, successRate: successRate(v), count: v.count }));
    const { texts, kind } = await this.deps.proposer.proposeWithKind({
      base: exp.base.text,
      tried,
      n: this.deps.policy.batchSize,
      round: exp.proposalsMade,
      context: { ...context, model: exp.model, task: exp.name },
      signal: new AbortController().signal,
    });
    this.figures.batches++;
    const seen = new Set(exp.variants.keys());
    const safe = [...new Set(texts)].filter((t) => t.length <= MAX_PROMPT_CHARS && sameVariables(exp.base.text, t) && !seen.has(promptIdOf(t)));
    this.figures.proposals_rejected += texts.length - safe.length;
    let predicted: Array<number | null> = safe.map(() => null);
    if (safe.length > 0) {
      try {
        const scorer = await this.deps.scorer();
        predicted = (await scorer.score(safe.map((prompt) => ({ prompt, context: { model: exp.model, task: exp.name } })))).p;
      } catch (err) {
        this.deps.log.warn({ err: (err as Error).message }, 'no scorer for screening: proposals enter unranked');
      }
    }
    this.figures.proposals_screened += safe.length;
    const candidates: Candidate[] = safe.map((text, i) => ({ id: promptIdOf(text), text, origin: kind, predicted: predicted[i] ?? null }));
    if (this.experiments.get(exp.key) !== exp) return; // a new generation started meanwhile
    const room = Math.max(0, Math.min(this.deps.policy.poolSize - exp.active.length, this.deps.policy.maxVariants - exp.variants.size));
    const added = exp.addBatch(candidates, room);
    this.persistExperiment(exp);
    this.persistVariants(exp, added);
  }

  private apply(exp: Experiment, decisions: Decision[]): void {
    for (const d of decisions) {
      if (d.kind === 'leader') {
        this.figures.leader_changes++;
        this.entries.push((store) =>
          store.recordEvolution({
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
              measured: 'outcomes',
            },
          }),
        );
        continue;
      }
      if (d.kind === 'retired') this.figures.retired++;
      else this.figures.banned++;
      this.persistVariants(exp, [d.variant]);
      const ab = {
        test_id: `${exp.name}/${exp.model}/${exp.generation}`,
        variant_a_prompt_id: d.against.id,
        variant_b_prompt_id: d.variant.id,
        winner: 'a' as const,
        confidence_level: Math.min(1, Math.max(0, d.confidence)),
        sample_size: d.against.count + d.variant.count,
        test_duration: 0,
        metrics: { a_rate: successRate(d.against), a_count: d.against.count, b_rate: successRate(d.variant), b_count: d.variant.count, banned: d.kind === 'banned' ? 1 : 0 },
      };
      this.entries.push((store) => store.recordAbResult(ab));
    }
    this.scheduleFlush();
  }

  private persistExperiment(exp: Experiment): void {
    this.dirtyExperiments.set(exp.key, exp);
    this.scheduleFlush();
  }

  private persistVariants(exp: Experiment, vs: Variant[]): void {
    for (const v of vs) this.dirtyVariants.set(`${exp.key}\u0000${exp.generation}\u0000${v.id}`, { exp, v });
    if (vs.length > 0) this.scheduleFlush();
  }

  private scheduleFlush(): void {
    this.flushing ??= new Promise<void>((r) => setImmediate(r)).then(() => this.flush());
  }

  /**
   * Write what changed since the last flush: experiments and variants in one
   * transaction (their latest state), then the evolutions and A/B results
   * through the group-commit writer. A failed write is logged and counted,
   * never thrown at a caller; the next change writes the latest state again.
   */
  private async flush(): Promise<void> {
    try {
      while (this.dirtyExperiments.size > 0 || this.dirtyVariants.size > 0 || this.entries.length > 0) {
        const exps = [...this.dirtyExperiments.values()].map((exp) => ({
          name: exp.name,
          model: exp.model,
          generation: exp.generation,
          base_prompt_id: exp.base.id,
          status: exp.status,
          pinned_prompt_id: exp.pinned ?? null,
          proposals_made: exp.proposalsMade,
        }));
        const vars: VariantRow[] = [...this.dirtyVariants.values()].map(({ exp, v }) => ({
          name: exp.name,
          model: exp.model,
          generation: exp.generation,
          prompt_id: v.id,
          text: v.text,
          origin: v.origin,
          prior_alpha: v.priorAlpha,
          prior_beta: v.priorBeta,
          predicted: v.predicted,
          state: v.state,
        }));
        const entries = this.entries.splice(0);
        this.dirtyExperiments.clear();
        this.dirtyVariants.clear();
        try {
          const store = await this.deps.store();
          await store.experiments.saveState(exps, vars);
          await Promise.all(entries.map((write) => write(store)));
        } catch (err) {
          this.figures.write_errors++;
          this.deps.log.warn({ err: (err as Error).message }, 'closed-loop state not written to the store');
        }
      }
    } finally {
      this.flushing = undefined;
    }
  }

  /** Wait for proposal batches and queued writes (tests, shutdown). */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.pending.values()]);
    while (this.flushing !== undefined) await this.flushing;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.settle();
  }
}

function fromRow(v: VariantRow): Variant {
  return { id: v.prompt_id, text: v.text, origin: v.origin, predicted: v.predicted, priorAlpha: v.prior_alpha, priorBeta: v.prior_beta, successes: 0, count: 0, state: v.state };
}

