/**
 * `npm run train:default`: evaluates the scorer the way the test suite does
 * (within-task; leave-tasks-out over 5 folds with task families held out
 * together) plus leave-tasks-out over plain task folds, then trains the
 * shipped scorer on every cell of data/multiprompt but the demo task's (19 of
 * 20 tasks) and writes
 * models/default.onnx, models/default.json and models/evaluation.json.
 * Deterministic (seeded); progress on stderr.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT } from '../../config.js';
import { evaluate, RankPool } from './evaluation.js';
import { FEATURE_SPEC, specHash } from '../features.js';
import { writeModel } from '../modelFile.js';
import { loadCells } from './multiprompt.js';
import { exportOnnx } from '../onnx.js';
import { SHIPPED_OPTIONS as DEFAULT_OPTIONS } from '../ranker.js';

/**
 * One task is left out of the shipped model, so that `npm run demo` can show the
 * closed loop on a task the shipped scorer has never seen (and the promotion rule
 * choosing the model trained on the demo's history over the shipped one).
 */
export const DEMO_TASK = 'sports_understanding';

const t0 = performance.now();
const progress = (m: string): void => void process.stderr.write(`[train:default ${((performance.now() - t0) / 1000).toFixed(0)} s] ${m}\n`);

const cells = loadCells();
const tasks = [...new Set(cells.map((c) => c.task))].sort();
progress(`${cells.length} cells (task × template × model), ${tasks.length} tasks, from data/multiprompt`);
progress('evaluation 1/2: within-task, and leave-tasks-out with task families held out together (the test suite asserts this one)');
const report = await evaluate(cells, { ...DEFAULT_OPTIONS, progress });
progress('evaluation 2/2: leave-tasks-out over plain task folds (a sibling task may be in training)');
const plain = await evaluate(cells, { ...DEFAULT_OPTIONS, only: 'lto', families: false, progress });

const shipped = cells.filter((c) => c.task !== DEMO_TASK);
progress(`final model on every cell of ${tasks.length - 1} tasks, all but ${DEMO_TASK} (${shipped.length})`);
const t1 = performance.now();
const pool = new RankPool(cells, DEFAULT_OPTIONS, Math.min(2, os.availableParallelism()));
const { weights, epochs } = await pool.train({ excludeTasks: [DEMO_TASK] }).finally(() => pool.close());
const seconds = (performance.now() - t1) / 1000;
const onnx = exportOnnx(weights, 'prompt-engine default scorer (pairwise ranking within (task, model), calibrated), trained on multiprompt (CDLA-Permissive-2.0)');
const dir = path.join(REPO_ROOT, 'models');
const l = report.leaveTasksOut;
const pl = plain.leaveTasksOut;
writeModel(dir, 'default', onnx, {
  // named by content: the same data, seed and code give the same version
  version: `default-${createHash('sha256').update(onnx).digest('hex').slice(0, 8)}`,
  feature_spec: FEATURE_SPEC,
  feature_spec_hash: specHash(FEATURE_SPEC),
  samples: shipped.length,
  metrics: {
    lto_spearman: l.spearman.model!,
    lto_regret: l.regret.model!,
    lto_nearest_neighbour_spearman: l.spearman.nearest_neighbour!,
    lto_nearest_neighbour_regret: l.regret.nearest_neighbour!,
    lto_default_regret: l.regret.default!,
    lto_random_regret: l.regret.random!,
    lto_plain_folds_spearman: pl.spearman.model!,
    lto_plain_folds_regret: pl.regret.model!,
    within_task_spearman: report.withinTask.spearman.model!,
    within_task_regret: report.withinTask.regret.model!,
    held_out_auc: report.heldOutCells.auc,
    held_out_log_loss: report.heldOutCells.logLoss,
    held_out_ece: report.heldOutCells.ece,
  },
  trained_at: new Date().toISOString(),
  unseen_tasks: [DEMO_TASK],
  trained_on: `data/multiprompt: ${tasks.length - 1} of its ${tasks.length} tasks, every template and model (${shipped.length} cells); not ${DEMO_TASK} (kept unseen for the demo's closed loop), and nothing else (no other tasks, models, languages or prompt kinds)`,
});
fs.writeFileSync(
  path.join(dir, 'evaluation.json'),
  `${JSON.stringify({ options: DEFAULT_OPTIONS, ...report, leaveTasksOutPlainFolds: plain.leaveTasksOut, final: { epochs, seconds, cells: shipped.length, tasks: tasks.filter((t) => t !== DEMO_TASK), notTrainedOn: [DEMO_TASK] } }, null, 2)}\n`,
);
progress(`wrote models/default.onnx (${onnx.length} bytes), models/default.json, models/evaluation.json`);
