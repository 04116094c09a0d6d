/**
 * The embeddings of the multiprompt corpus for offline work (evaluation,
 * `train:default`, the loop simulation): read from the file
 * `scripts/embed-multiprompt.mjs` writes for an embedding model
 * (`models/embeddings-multiprompt.bin` for the serving model, which the
 * engine also reads as its shipped cache; `bench/.out/embeddings-<model>.bin`
 * for a model measured beside it). Read once per thread.
 */
import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from '../../config.js';
import { decodeVector, EMBEDDING_MODEL, promptId, readEmbeddingFile, SHIPPED_EMBEDDINGS } from '../embeddings.js';

export function corpusEmbeddingFile(model: string): string {
  return model === EMBEDDING_MODEL ? SHIPPED_EMBEDDINGS : path.join(REPO_ROOT, 'bench', '.out', `embeddings-${model}.bin`);
}

const loaded = new Map<string, { vectors: Map<string, Uint8Array>; decoded: Map<string, Float32Array> }>();

/** The vector of a corpus text under `model`; throws when the file lacks it (build it first). */
export function corpusEmbedding(model: string, text: string): Float32Array {
  let f = loaded.get(model);
  if (f === undefined) {
    const file = corpusEmbeddingFile(model);
    if (!fs.existsSync(file)) throw new Error(`${path.relative(REPO_ROOT, file)} is missing: run node scripts/embed-multiprompt.mjs${model === EMBEDDING_MODEL ? '' : ` --model ${model}`}`);
    const r = readEmbeddingFile(file);
    if (r.model !== model) throw new Error(`${file} holds ${r.model}, not ${model}`);
    loaded.set(model, (f = { vectors: r.vectors, decoded: new Map() }));
  }
  const id = promptId(text);
  let v = f.decoded.get(id);
  if (v === undefined) {
    const b = f.vectors.get(id);
    if (b === undefined) throw new Error(`no ${model} embedding for ${id} in ${corpusEmbeddingFile(model)}: rebuild it with scripts/embed-multiprompt.mjs`);
    f.decoded.set(id, (v = decodeVector(b)));
  }
  return v;
}
