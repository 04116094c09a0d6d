/**
 * One experiment driven the way the decider drives it, each change applied
 * to an in-memory snapshot the way the store applies it (`applyToSnapshot`,
 * what `change` returns after writing it), and adopted: the pure policy
 * without a database (test/experiments.test.ts). The SQL behind it is
 * checked against real databases in test/fleet.test.ts.
 */
import { Experiment, decisionChange, variantRow, type Candidate, type Decision, type LoopPolicy } from '../../src/experiments/experiment.js';
import { operatorChange, type OperatorAction } from '../../src/experiments/service.js';
import { applyToSnapshot, type ExperimentChange, type ExperimentSnapshot } from '../../src/store/experimentRecords.js';
import { DEFAULT_OBJECTIVE, NO_TOTALS, TOTALS_KEYS, type Objective, type VariantTotals } from '../../src/experiments/objective.js';

export class MemoryLoop {
  snap: ExperimentSnapshot;
  exp: Experiment;

  constructor(base: Candidate, readonly policy: LoopPolicy, objective: Objective = DEFAULT_OBJECTIVE) {
    this.snap = {
      row: { name: 'e', model: 'm', generation: 1, base_prompt_id: base.id, status: 'running', pinned_prompt_id: null, proposals_made: 0, leader_prompt_id: base.id, outcomes_at_last_batch: 0, revision: 1, updated_at: '', objective },
      variants: [{ ...variantRow(base, policy, 'active'), ...NO_TOTALS }],
    };
    this.exp = Experiment.fromSnapshot(this.snap, policy);
  }

  apply(c: ExperimentChange | undefined): void {
    if (c === undefined) return;
    this.snap = applyToSnapshot(this.snap, c, { revision: this.snap.row.revision + 1, updated_at: '' });
    this.exp.adopt(this.snap);
  }

  /** One outcome (a success, or any graded one) counted in the "store", then what the policy decides, applied. */
  observe(id: string, outcome: boolean | Partial<VariantTotals>): Decision[] {
    const v = this.snap.variants.find((x) => x.prompt_id === id);
    if (v === undefined) return [];
    const d = typeof outcome === 'boolean' ? { count: 1, successes: outcome ? 1 : 0, scored: 1, score_sum: outcome ? 1 : 0, score_sq: outcome ? 1 : 0 } : outcome;
    for (const k of TOTALS_KEYS) v[k] += d[k] ?? 0;
    this.exp.recordTotals(id, v);
    const { change, applied } = decisionChange(this.snap, this.exp.decisions());
    if (applied.length > 0) this.apply(change);
    return applied;
  }

  addBatch(candidates: Candidate[], room: number): void {
    this.apply(this.exp.batchChange(candidates, room));
  }

  act(action: OperatorAction, opts: { promptId?: string; force?: boolean } = {}): void {
    this.apply(operatorChange(this.snap, action, opts));
  }
}
