/**
 * Registers the `scorer` service: the last promoted model of the registry
 * (store), else the shipped models/default.onnx.
 */
import fs from 'node:fs';
import path from 'node:path';
import '../store/service.js';
import { record } from '../codec/terms.js';
import { defineService } from '../engine.js';
import { readModel } from './modelFile.js';
import { Scorer } from './scorer.js';

declare module '../engine.js' {
  interface Services {
    scorer: Scorer;
  }
}

defineService('scorer', {
  create: async (engine) => {
    try {
      const store = await engine.service('store');
      const promoted = await store.promotedModel();
      if (promoted !== undefined && fs.existsSync(promoted.path)) {
        const { onnx, meta } = readModel(promoted.path);
        return await Scorer.load(onnx, meta);
      }
    } catch (err) {
      engine.log.warn({ err: (err as Error).message }, 'no promoted model from the registry: serving the shipped default');
    }
    const { onnx, meta } = readModel(path.join(engine.config.modelsDir, 'default.onnx'));
    return Scorer.load(onnx, meta);
  },
  close: (s) => s.close(),
  stats: (s) => record({ model_version: s.modelVersion, samples: s.info.samples }),
});
