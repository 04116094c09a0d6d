/**
 * The trainer's worker thread: featurizes the rows it is given and trains
 * the MLP off the event loop, posting progress; the main thread terminates
 * it to cancel. Input and output are plain data (rows in, weights out).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { featureDim, featurize, FEATURE_SPEC } from './features.js';
import { trainMlp, type Example, type TrainOptions } from './mlp.js';

export interface TrainRow {
  prompt: string;
  context: Record<string, string>;
  y: number;
  w: number;
  holdout: boolean;
}

export interface TrainRequest {
  rows: TrainRow[];
  options: Omit<TrainOptions, 'onEpoch' | 'shouldStop'>;
}

if (parentPort !== null && workerData !== undefined) {
  const { rows, options } = workerData as TrainRequest;
  const train: Example[] = [];
  const val: Example[] = [];
  for (const r of rows) (r.holdout ? val : train).push({ x: featurize(r.prompt, r.context), y: r.y, w: r.w });
  const result = trainMlp(train, val, featureDim(FEATURE_SPEC), { ...options, onEpoch: (e) => parentPort!.postMessage({ type: 'epoch', ...e }) });
  const w = result.weights;
  parentPort.postMessage({ type: 'done', weights: w, epochs: result.epochs, valLoss: result.valLoss }, [w.w1.buffer, w.b1.buffer, w.w2.buffer, w.b2.buffer, w.w3.buffer, w.b3.buffer] as ArrayBuffer[]);
}
