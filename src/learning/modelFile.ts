/**
 * A trained model on disk: `<name>.onnx` (the graph and its weights) beside
 * `<name>.json` (version, feature spec and its hash, sample count, held-out
 * metrics). The shipped default lives in models/; trained ones under
 * `<dataDir>/models/`.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { FeatureSpec } from './features.js';

export interface ModelMeta {
  version: string;
  feature_spec: FeatureSpec;
  feature_spec_hash: string;
  samples: number;
  metrics: Record<string, number>;
  trained_at: string;
  trained_on: string;
  /** Corpus tasks (data/multiprompt) the model never trained on: continuous retraining keeps them out and compares models on them. */
  unseen_tasks?: string[];
}

export function writeModel(dir: string, name: string, onnx: Uint8Array, meta: ModelMeta): string {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${name}.onnx`);
  fs.writeFileSync(file, onnx);
  fs.writeFileSync(path.join(dir, `${name}.json`), `${JSON.stringify(meta, null, 2)}\n`);
  return file;
}

export function readModel(file: string): { onnx: Uint8Array; meta: ModelMeta } {
  const onnx = new Uint8Array(fs.readFileSync(file));
  const meta = JSON.parse(fs.readFileSync(file.replace(/\.onnx$/, '.json'), 'utf8')) as ModelMeta;
  return { onnx, meta };
}
