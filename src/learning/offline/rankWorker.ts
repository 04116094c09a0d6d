/**
 * Worker thread for the offline evaluation and `train:default`: holds the
 * multiprompt cells (sent once) and trains one ranking member per job — the
 * cells of a selection (all but some tasks, or the history half), one seed.
 * Jobs are independent and seeded, so a result does not depend on which
 * worker ran it or in what order.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { FEATURE_SPEC, specHash } from '../features.js';
import type { Cell } from './multiprompt.js';
import { trainMember, type RankerOptions } from '../ranker.js';
import { selectCells, type Selection, examplesOf } from './evaluation.js';

export interface RankJob {
  id: number;
  selection: Selection;
  seed: number;
}

export interface RankWorkerData {
  cells: Cell[];
  options: Omit<RankerOptions, 'onEpoch' | 'shouldStop'>;
}

if (parentPort !== null && workerData !== undefined) {
  const { cells, options } = workerData as RankWorkerData;
  parentPort.postMessage({ type: 'ready', specHash: specHash(options.spec ?? FEATURE_SPEC) });
  parentPort.on('message', (job: RankJob) => {
    try {
      const selected = selectCells(cells, job.selection);
      const r = trainMember(examplesOf(selected, options.spec), job.seed, options);
      const w = r.weights;
      parentPort!.postMessage({ type: 'done', id: job.id, weights: w, epochs: r.epochs }, [w.w1.buffer, w.b1.buffer, w.w2.buffer, w.b2.buffer, w.w3.buffer, w.b3.buffer] as ArrayBuffer[]);
    } catch (err) {
      parentPort!.postMessage({ type: 'error', id: job.id, message: err instanceof Error ? (err.stack ?? err.message) : String(err) });
    }
  });
}
