/**
 * The scorer on real data (data/multiprompt): within-task ranking of unseen
 * templates and leave-tasks-out, against baselines in the same run, and
 * execution-level AUC / calibration on held-out cells. Deterministic
 * (seeded); the figures go to MODEL_CARD.md via `npm run train:default`.
 */
import { describe, expect, it } from 'vitest';
import { evaluate } from '../src/learning/offline/evaluation.js';
import { loadCells } from '../src/learning/offline/multiprompt.js';

describe('scorer evaluation on multiprompt', () => {
  it('beats random choice and a length-only model on top-1 regret, within tasks and on unseen tasks', () => {
    const report = evaluate(loadCells(), { epochs: 12, seed: 42 });
    process.stderr.write(`[learning-eval] ${JSON.stringify({ within: report.withinTask, lto: report.leaveTasksOut, cells: report.heldOutCells })}\n`);
    const w = report.withinTask;
    expect(w.groups).toBeGreaterThan(200);
    expect(w.regret.model!).toBeLessThan(w.regret.random!);
    expect(w.regret.model!).toBeLessThan(w.regret.length_only!);
    expect(w.spearman.model!).toBeGreaterThan(0.3);
    const l = report.leaveTasksOut;
    expect(l.regret.model!).toBeLessThan(l.regret.random!);
    expect(l.regret.model!).toBeLessThan(l.regret.length_only!);
    expect(report.heldOutCells.auc).toBeGreaterThan(0.7);
    expect(report.heldOutCells.ece).toBeLessThan(0.05);
  }, 240_000);
});
