/**
 * The trainer's worker thread: featurizes the rows it is given, trains the
 * ranker (ranker.ts) on the rows not held out, posting progress, and
 * measures the new model (and the serving one, when given) on the held-out
 * split and on the corpus tasks the serving model never saw (heldOut.ts):
 * everything that grows with the history runs here, off the event loop that
 * serves. The main thread terminates it to cancel. Rows are ranked against
 * the other rows of their (task, model) group. Input and output are plain
 * data (rows in; weights and measures out).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { heldOutMetrics, unseenMetrics, type HeldOutMetrics, type UnseenMetrics } from './heldOut.js';
import type { MlpWeights } from './mlp.js';
import { readOnnxWeights } from './onnx.js';
import { SHIPPED_OPTIONS, trainRanker, type RankerOptions } from './ranker.js';
import { rowExamples, type TrainRow } from './trainRows.js';

export interface TrainRequest {
  /** The history's rows first, then any replayed corpus rows. */
  rows: TrainRow[];
  /** How many of `rows` are the history (measured on their held-out split). */
  history: number;
  options: Omit<RankerOptions, 'onEpoch' | 'shouldStop'>;
  /** The serving model's ONNX, measured on the same split (absent: nothing serves, or its features differ); read here, since decoding it holds a thread for a while. */
  serving?: Uint8Array;
  /** The corpus tasks the serving model never saw, and their rows: both models rank them. */
  unseen?: { tasks: string[]; rows: TrainRow[] };
}

export interface TrainResult {
  weights: MlpWeights;
  epochs: number;
  metrics: HeldOutMetrics;
  servingMetrics?: HeldOutMetrics;
  unseen?: UnseenMetrics;
  servingUnseen?: UnseenMetrics;
}

export function trainAndMeasure(req: TrainRequest, onEpoch: (e: { epoch: number; trainLoss: number; valLoss: number }) => void): TrainResult {
  // First: a serving model that cannot be read fails the training before it runs, not after.
  const serving = req.serving === undefined ? undefined : readOnnxWeights(req.serving);
  const train = req.rows.filter((r) => !r.holdout);
  const result = trainRanker(rowExamples(train), { ...SHIPPED_OPTIONS, ...req.options, onEpoch }, train.map((r) => r.context));
  const history = req.rows.slice(0, req.history);
  const guard = req.unseen !== undefined && req.unseen.rows.length > 0 ? req.unseen : undefined;
  return {
    weights: result.weights,
    epochs: Math.max(...result.epochs),
    metrics: heldOutMetrics(result.weights, history),
    ...(serving === undefined ? {} : { servingMetrics: heldOutMetrics(serving, history) }),
    ...(guard === undefined ? {} : { unseen: unseenMetrics(result.weights, guard.rows, guard.tasks) }),
    ...(guard === undefined || serving === undefined ? {} : { servingUnseen: unseenMetrics(serving, guard.rows, guard.tasks) }),
  };
}

if (parentPort !== null && workerData !== undefined) {
  const out = trainAndMeasure(workerData as TrainRequest, (e) => parentPort!.postMessage({ type: 'epoch', ...e }));
  const w = out.weights;
  parentPort.postMessage({ type: 'done', result: out }, [w.w1.buffer, w.b1.buffer, w.w2.buffer, w.b2.buffer, w.w3.buffer, w.b3.buffer] as ArrayBuffer[]);
}
