/**
 * One experiment driven the way the decider drives it, with the store's
 * semantics in memory (test/experiments.test.ts checks the pure policy with
 * it; the SQL of the same semantics is checked against real databases in
 * test/fleet.test.ts and test/experiments.test.ts): a change adds variants
 * that are absent, moves states only from the states it lists, sets fields,
 * bumps the revision, and the experiment adopts the result.
 */
import { Experiment, decisionChange, variantRow, type Candidate, type Decision, type LoopPolicy } from '../../src/experiments/experiment.js';
import { operatorChange, type OperatorAction } from '../../src/experiments/service.js';
import type { ExperimentChange, ExperimentSnapshot } from '../../src/store/experimentRecords.js';

export class MemoryLoop {
  snap: ExperimentSnapshot;
  exp: Experiment;

  constructor(base: Candidate, readonly policy: LoopPolicy) {
    this.snap = {
      row: { name: 'e', model: 'm', generation: 1, base_prompt_id: base.id, status: 'running', pinned_prompt_id: null, proposals_made: 0, leader_prompt_id: base.id, outcomes_at_last_batch: 0, revision: 1, updated_at: '' },
      variants: [{ ...variantRow(base, policy, 'active'), successes: 0, count: 0 }],
    };
    this.exp = Experiment.fromSnapshot(this.snap, policy);
  }

  apply(c: ExperimentChange | undefined): void {
    if (c === undefined) return;
    const row = { ...this.snap.row, ...(c.fields ?? {}), revision: this.snap.row.revision + 1 };
    const variants = this.snap.variants.map((v) => ({ ...v }));
    for (const a of c.add ?? []) if (!variants.some((v) => v.prompt_id === a.prompt_id)) variants.push({ ...a, successes: 0, count: 0 });
    for (const m of c.moves ?? []) {
      const v = variants.find((x) => x.prompt_id === m.prompt_id);
      if (v !== undefined && m.from.includes(v.state)) v.state = m.to;
    }
    this.snap = { row, variants };
    this.exp.adopt(this.snap);
  }

  /** One outcome counted in the "store", then what the policy decides, applied. */
  observe(id: string, success: boolean): Decision[] {
    const v = this.snap.variants.find((x) => x.prompt_id === id);
    if (v === undefined) return [];
    v.count++;
    if (success) v.successes++;
    this.exp.recordTotals(id, v.successes, v.count);
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
