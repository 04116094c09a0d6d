/**
 * `npm run train:default`: trains the shipped scorer on data/multiprompt
 * (deterministic by seed), evaluates it the way the test suite does, and
 * writes models/default.onnx, models/default.json and models/evaluation.json.
 * Progress on stderr.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from '../../config.js';
import { evaluate, trainOn } from './evaluation.js';
import { FEATURE_SPEC, specHash } from '../features.js';
import { writeModel } from '../modelFile.js';
import { loadCells } from './multiprompt.js';
import { exportOnnx } from '../onnx.js';

const SEED = 42;
/**
 * One task is left out of the shipped model, so that `npm run demo` can show the
 * engine learning a task the shipped model has never seen (and the promotion rule
 * choosing the model trained on the demo's history over the shipped one).
 */
export const DEMO_TASK = 'sports_understanding';
const EPOCHS = 12;
const progress = (m: string): void => void process.stderr.write(`[train:default] ${m}\n`);

const cells = loadCells();
progress(`${cells.length} cells (task × template × model) from data/multiprompt`);
progress('evaluation: within-task split and leave-tasks-out (this trains two models)');
const report = evaluate(cells, { epochs: EPOCHS, seed: SEED, onEpoch: (e) => progress(`  epoch ${e.epoch}: held-out loss ${e.valLoss.toFixed(4)}`) });
const shippedCells = cells.filter((c) => c.task !== DEMO_TASK);
progress(`final model on every cell but ${DEMO_TASK}'s (${shippedCells.length})`);
const t0 = performance.now();
const { weights, epochs } = trainOn(shippedCells, { epochs: EPOCHS, seed: SEED, onEpoch: (e) => progress(`  epoch ${e.epoch}: held-out loss ${e.valLoss.toFixed(4)}`) });
const seconds = (performance.now() - t0) / 1000;
const onnx = exportOnnx(weights, 'prompt-engine default success predictor, trained on multiprompt (CDLA-Permissive-2.0)');
const dir = path.join(REPO_ROOT, 'models');
writeModel(dir, 'default', onnx, {
  // named by content: the same data, seed and code give the same version
  version: `default-${createHash('sha256').update(onnx).digest('hex').slice(0, 8)}`,
  feature_spec: FEATURE_SPEC,
  feature_spec_hash: specHash(FEATURE_SPEC),
  samples: shippedCells.length,
  metrics: {
    within_task_spearman: report.withinTask.spearman.model!,
    within_task_regret: report.withinTask.regret.model!,
    held_out_auc: report.heldOutCells.auc,
    held_out_log_loss: report.heldOutCells.logLoss,
    held_out_ece: report.heldOutCells.ece,
  },
  trained_at: new Date().toISOString(),
  trained_on: `data/multiprompt: 19 tasks, all templates and models (${DEMO_TASK} left out for the demo)`,
});
fs.writeFileSync(path.join(dir, 'evaluation.json'), `${JSON.stringify({ ...report, final: { epochs, seconds, cells: shippedCells.length, left_out_task: DEMO_TASK } }, null, 2)}\n`);
progress(`wrote models/default.onnx (${onnx.length} bytes), models/default.json, models/evaluation.json`);
