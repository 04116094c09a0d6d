/**
 * Prompt embeddings (src/learning/embeddings.ts): the real Universal
 * Sentence Encoder in its worker thread (dist/, built first), the cache in
 * memory (bounded) and in a real store (PGlite; PostgreSQL too when the
 * suite has one), the model named in the store's key, the shipped file of
 * the multiprompt corpus checked against the data and the serving model,
 * how computations share the worker (their turns and their stop, with a
 * stand-in worker the test steps, and through the real sidecar: a cancelled
 * `score` of thousands of unseen prompts), and the closed loop's pure helpers.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  cosine,
  decodeVector,
  EMBED_CHUNK,
  EMBED_MAX_TEXTS,
  EMBEDDING_MODEL,
  EmbeddingService,
  encodeVector,
  NEAR_DUPLICATE_COSINE,
  nearDuplicate,
  neighbourEstimate,
  promptId,
  readEmbeddingFile,
  SHIPPED_EMBEDDINGS,
} from '../src/learning/embeddings.js';
import { FEATURE_SPEC } from '../src/learning/features.js';
import { corpusTexts, corpusTextsHash } from '../src/learning/offline/multiprompt.js';
import { createLogger } from '../src/log.js';
import { TrackingStore } from '../src/store/trackingStore.js';
import { DEFAULT_POLICY, priorOf, type Candidate } from '../src/experiments/experiment.js';
import { promptIdOf } from '../src/optimizer/evaluators.js';
import { MemoryLoop } from './helpers/memoryLoop.js';
import { PortClient } from './helpers/portClient.js';
import { sidecarStoreEnv } from './helpers/pg.js';
import { until } from './helpers/poll.js';
import { record, type TermObject } from '../src/codec/terms.js';

const log = createLogger('silent');
const dirs: string[] = [];
const tmp = (): string => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-embed-'));
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});
const vectorOf = (s: string): Float32Array => Float32Array.from({ length: 8 }, (_, i) => s.length + i);
/** What the service answers for `vectorOf(s)`: quantised as it is stored. */
const servedOf = (s: string): Float32Array => decodeVector(encodeVector(vectorOf(s)));

/**
 * A stand-in for the worker thread, stepped by the test: computations wait
 * in the order they arrive; `next()` completes the oldest (once one waits).
 */
function steppedWorker(): { compute: (t: string[]) => Promise<Float32Array[]>; chunks: string[][]; waiting: () => number; next: () => Promise<void>; drain: (p: Promise<unknown>) => Promise<void> } {
  const chunks: string[][] = [];
  const queue: Array<{ texts: string[]; resolve(v: Float32Array[]): void }> = [];
  const compute = (texts: string[]): Promise<Float32Array[]> => new Promise((resolve) => queue.push({ texts, resolve }));
  const next = async (): Promise<void> => {
    await until(() => queue.length > 0);
    const job = queue.shift()!;
    chunks.push(job.texts);
    job.resolve(job.texts.map(vectorOf));
    await new Promise((r) => setImmediate(r));
  };
  const drain = async (p: Promise<unknown>): Promise<void> => {
    let done = false;
    void p.finally(() => (done = true)).catch(() => undefined);
    while (!done) await (queue.length > 0 ? next() : new Promise((r) => setImmediate(r)));
  };
  return { compute, chunks, waiting: () => queue.length, next, drain };
}

describe('the shipped embeddings of data/multiprompt', () => {
  const file = readEmbeddingFile(SHIPPED_EMBEDDINGS);
  it('are of the serving model and the spec reads that model', () => {
    expect(file.model).toBe(EMBEDDING_MODEL);
    expect(FEATURE_SPEC.embedding?.model).toBe(EMBEDDING_MODEL);
    expect(file.dims).toBe(FEATURE_SPEC.embedding?.dims);
  });
  it('hold every text of the data, and nothing else (rebuild with scripts/embed-multiprompt.mjs)', () => {
    const texts = corpusTexts();
    expect(file.header.texts_sha256).toBe(corpusTextsHash(texts));
    expect(file.vectors.size).toBe(texts.length);
    for (const t of texts) expect(file.vectors.has(promptId(t))).toBe(true);
  });
});

describe('the embedding service', () => {
  it('embeds in its worker what the shipped file holds, and puts paraphrases nearer than unrelated prompts', async () => {
    const service = new EmbeddingService({ maxEntries: 100, log });
    try {
      const corpus = corpusTexts().slice(0, 3);
      const [a, b, c, ...fromCorpus] = await service.embed(['Determine whether the sentence is plausible.', 'Decide if this statement is believable.', 'Sort the following words alphabetically.', ...corpus]);
      expect(service.figures.computed).toBe(6);
      expect(service.figures.worker_starts).toBe(1);
      expect(a!.length).toBe(512);
      expect(cosine(a!, b!)).toBeGreaterThan(cosine(a!, c!) + 0.1);
      const shipped = readEmbeddingFile(SHIPPED_EMBEDDINGS);
      fromCorpus.forEach((v, i) => expect(cosine(v, decodeVector(shipped.vectors.get(promptId(corpus[i]!))!))).toBeGreaterThan(0.999));
      // a second ask is answered from memory
      const again = await service.embed(['Decide if this statement is believable.']);
      expect(again[0]).toEqual(b);
      expect(service.figures.computed).toBe(6);
    } finally {
      await service.close();
    }
  }, 120_000);

  it('reads the shipped file before computing, and ignores a file of another model', async () => {
    const dir = tmp();
    const other = path.join(dir, 'other.bin');
    const { writeEmbeddingFile } = await import('../src/learning/embeddings.js');
    writeEmbeddingFile(other, 'another-model', 4, [{ promptId: promptId('x'), vector: encodeVector([1, 0, 0, 0]) }]);
    let computed = 0;
    const service = new EmbeddingService({ maxEntries: 100, log, shippedFiles: [other, SHIPPED_EMBEDDINGS], compute: async (t) => ((computed += t.length), t.map(() => new Float32Array(512).fill(0.1))) });
    const text = corpusTexts()[7]!;
    const [v] = await service.embed([text, 'x']);
    expect(computed).toBe(1); // only 'x': the other model's file is not used
    expect(service.figures.shipped_hits).toBe(1);
    expect(v).toEqual(decodeVector(readEmbeddingFile(SHIPPED_EMBEDDINGS).vectors.get(promptId(text))!));
    await service.close();
  });

  it('keeps at most maxEntries in memory, shares one computation between callers, and refuses too many texts', async () => {
    let calls = 0;
    const service = new EmbeddingService({
      maxEntries: 2,
      log,
      compute: async (t) => {
        calls++;
        await new Promise((r) => setImmediate(r));
        return t.map((s) => Float32Array.from({ length: 8 }, (_, i) => s.length + i));
      },
    });
    const [x, y] = await Promise.all([service.embed(['a', 'b', 'c']), service.embed(['a', 'b'])]);
    expect(calls).toBe(1);
    expect(y[0]).toEqual(x[0]);
    expect(service.size).toBe(2);
    await expect(service.embed(new Array<string>(EMBED_MAX_TEXTS + 1).fill('z'))).rejects.toThrow(`at most ${EMBED_MAX_TEXTS} texts`);
    await service.close();
  });

  it('computes a large job EMBED_CHUNK prompts at a time, a small job taking its turn between two of them', async () => {
    const worker = steppedWorker();
    const service = new EmbeddingService({ maxEntries: 1_000, log, compute: worker.compute });
    const big = Array.from({ length: 200 }, (_, i) => `big prompt ${i}`);
    const bigCall = service.embed(big);
    await worker.next();
    await worker.next();
    const small = service.embed(['a small prompt']);
    // The big job's next chunk and the small job's wait, nothing else of the big job's.
    await until(() => worker.waiting() === 2);
    await worker.next();
    await worker.next();
    expect((await small)[0]).toEqual(servedOf('a small prompt'));
    expect(worker.chunks[3]).toEqual(['a small prompt']);
    await worker.drain(bigCall);
    expect(await bigCall).toEqual(big.map(servedOf));
    expect(Math.max(...worker.chunks.map((c) => c.length))).toBe(EMBED_CHUNK);
    expect(service.figures.computed).toBe(201);
    await service.close();
  });

  it('stops a job nobody waits for after the chunk at hand, and finishes what another caller still awaits', async () => {
    const worker = steppedWorker();
    const service = new EmbeddingService({ maxEntries: 1_000, log, compute: worker.compute });
    const big = Array.from({ length: 200 }, (_, i) => `big prompt ${i}`);
    // Cancelled alone: rejected at once with the signal's reason; the worker is asked for nothing after the chunk at hand.
    const stop = new AbortController();
    const alone = service.embed(big, stop.signal);
    await worker.next();
    await worker.next();
    await until(() => worker.waiting() === 1);
    stop.abort();
    await expect(alone).rejects.toThrow(/abort/i);
    await worker.next();
    await new Promise((r) => setTimeout(r, 20));
    expect(worker.waiting()).toBe(0);
    expect(service.figures.computed).toBe(3 * EMBED_CHUNK);
    // What it did not compute is computed anew for the next caller (no rejection left behind for it).
    const again = service.embed([big[199]!]);
    await worker.next();
    expect((await again)[0]).toEqual(servedOf(big[199]!));
    await expect(service.embed(['x'], AbortSignal.abort())).rejects.toThrow(/abort/i);

    // Shared: another caller awaits one of its prompts; the job goes on until that one is computed, then stops.
    const worker2 = steppedWorker();
    const shared = new EmbeddingService({ maxEntries: 1_000, log, compute: worker2.compute });
    const stop2 = new AbortController();
    const first = shared.embed(big, stop2.signal);
    await worker2.next();
    const second = shared.embed([big[100]!]);
    stop2.abort();
    await expect(first).rejects.toThrow(/abort/i);
    await worker2.drain(second);
    expect((await second)[0]).toEqual(servedOf(big[100]!));
    await new Promise((r) => setTimeout(r, 20));
    if (worker2.waiting() > 0) await worker2.next();
    await new Promise((r) => setTimeout(r, 20));
    expect(worker2.waiting()).toBe(0);
    const chunkOf100 = Math.floor(100 / EMBED_CHUNK);
    expect(worker2.chunks.length).toBeGreaterThanOrEqual(chunkOf100 + 1);
    expect(worker2.chunks.length).toBeLessThanOrEqual(chunkOf100 + 2);
    await service.close();
    await shared.close();
  });

  const stores: Array<[string, () => Promise<TrackingStore>]> = [['PGlite', () => TrackingStore.open({ dataDir: tmp(), log })]];
  if (process.env.TEST_DATABASE_URL) stores.push(['PostgreSQL', () => TrackingStore.open({ databaseUrl: process.env.TEST_DATABASE_URL, dataDir: tmp(), schema: `pe_embed_${process.pid}`, log })]);
  for (const [name, open] of stores)
    it(`computes each prompt once for every service on one store (${name}), keyed by the model`, async () => {
      const store = await open();
      try {
        let computed = 0;
        const compute = async (t: string[]): Promise<Float32Array[]> => ((computed += t.length), t.map((s) => Float32Array.from({ length: 512 }, (_, i) => Math.sin(s.length + i))));
        const a = new EmbeddingService({ maxEntries: 10, log, store: async () => store, compute });
        const [va] = await a.embed(['You are a careful grader. Answer yes or no.']);
        expect(computed).toBe(1);
        const b = new EmbeddingService({ maxEntries: 10, log, store: async () => store, compute: async () => Promise.reject(new Error('must come from the store')) });
        const [vb] = await b.embed(['You are a careful grader. Answer yes or no.']);
        expect(b.figures.store_hits).toBe(1);
        expect(vb).toEqual(va);
        expect(await store.embeddings.count(EMBEDDING_MODEL)).toBe(1);
        // another model's key finds nothing: a new model recomputes
        expect((await store.embeddings.get('another-model', [promptId('You are a careful grader. Answer yes or no.')])).size).toBe(0);
        await a.close();
        await b.close();
      } finally {
        await store.close();
      }
    }, 60_000);
});

describe('neighbours by meaning', () => {
  const unit = (...xs: number[]): Float32Array => {
    const n = Math.hypot(...xs);
    return Float32Array.from(xs, (x) => x / n);
  };
  it('estimates a newcomer from its nearest measured neighbours, shrunk to the pooled rate', () => {
    const near = { embedding: unit(1, 0.05, 0), successes: 90, count: 100 };
    const far = { embedding: unit(0, 1, 0), successes: 10, count: 100 };
    const e = neighbourEstimate(unit(1, 0, 0), [near, far]);
    expect(e.mean).toBeGreaterThan(0.8);
    expect(neighbourEstimate(unit(0, 1, 0.02), [near, far]).mean).toBeLessThan(0.2);
    // the strength is capped: a prior the newcomer's own outcomes soon outweigh
    expect(e.strength).toBeLessThanOrEqual(4);
    expect(e.alpha / (e.alpha + e.beta)).toBeGreaterThan(0.7);
    // nobody near: the pooled rate
    const alone = neighbourEstimate(unit(0, 0, 1), [near, far]);
    expect(alone.mean).toBeCloseTo(0.5, 1);
    expect(alone.strength).toBeLessThan(0.01);
    // nothing measured: 0.5 worth nothing
    expect(neighbourEstimate(unit(1, 0, 0), [])).toMatchObject({ mean: 0.5, strength: 0, alpha: 1, beta: 1 });
  });

  it('calls near-duplicates what is within the threshold only', () => {
    expect(nearDuplicate(unit(1, 0), unit(1, 0.01))).toBe(true);
    expect(nearDuplicate(unit(1, 0), unit(1, 0.5))).toBe(false);
    expect(NEAR_DUPLICATE_COSINE).toBeGreaterThan(0.8);
  });

  it('encodes a vector in 4 + dims bytes and back within the int8 step', () => {
    const v = Float32Array.from({ length: 512 }, (_, i) => Math.sin(i) / 20);
    const b = encodeVector(v);
    expect(b.length).toBe(516);
    const d = decodeVector(b);
    expect(cosine(v, d)).toBeGreaterThan(0.9999);
  });
});

describe('the closed loop by meaning', () => {
  const unit = (...xs: number[]): Float32Array => {
    const n = Math.hypot(...xs);
    return Float32Array.from(xs, (x) => x / n);
  };
  const cand = (text: string): Candidate => ({ id: promptIdOf(text), text, origin: 'llm', predicted: 0.5 });
  // Two measured variants, A good and B bad; C is worded like B but means what A means, D the other way round.
  const A = cand('Answer with care and precision.');
  const B = cand('Reply in a hurry without checking.');
  const C = cand('Reply in a hurry without checking twice.');
  const D = cand('Answer with care and precision please.');
  const vectors = new Map([
    [promptIdOf('base'), unit(0, 0, 1)],
    [A.id, unit(1, 0, 0)],
    [B.id, unit(0, 1, 0)],
    [C.id, unit(1, 0.1, 0)],
    [D.id, unit(0.1, 1, 0)],
  ]);
  const vectorOf = (id: string): Float32Array | undefined => vectors.get(id);

  function measured(policy = DEFAULT_POLICY): MemoryLoop {
    const m = new MemoryLoop({ id: promptIdOf('base'), text: 'base', origin: 'base', predicted: null }, policy);
    m.addBatch([A, B], 2);
    for (let i = 0; i < 20; i++) {
      m.observe(A.id, i % 10 !== 0); // 90%
      m.observe(B.id, i % 10 === 0); // 10%
    }
    return m;
  }

  it('ranks the reserve by what the nearest measured variants by meaning achieved, by wording when no vector is at hand', () => {
    const byMeaning = measured();
    const admitted = byMeaning.exp.batchChange([C, D], 1, vectorOf).add!.filter((r) => r.state === 'active').map((r) => r.prompt_id);
    expect(admitted).toEqual([C.id]);
    // The same experiment without vectors (or with neighbourBandwidth 0) goes by wording: D looks like A.
    expect(byMeaning.exp.batchChange([C, D], 1).add!.filter((r) => r.state === 'active').map((r) => r.prompt_id)).toEqual([D.id]);
    const byWords = measured({ ...DEFAULT_POLICY, neighbourBandwidth: 0 });
    expect(byWords.exp.batchChange([C, D], 1, vectorOf).add!.filter((r) => r.state === 'active').map((r) => r.prompt_id)).toEqual([D.id]);
  });

  it("gives a newcomer a prior from its neighbours' outcomes, worth a few outcomes, added to the scorer's", () => {
    const m = measured();
    const nearGood = m.exp.neighbourPrior(vectors.get(C.id)!, vectorOf)!;
    const nearBad = m.exp.neighbourPrior(vectors.get(D.id)!, vectorOf)!;
    expect(nearGood.mean).toBeGreaterThan(0.7);
    expect(nearBad.mean).toBeLessThan(0.3);
    expect(nearGood.strength).toBeGreaterThan(0);
    expect(nearGood.strength).toBeLessThanOrEqual(4);
    const plain = priorOf(C, DEFAULT_POLICY);
    const informed = priorOf({ ...C, neighbours: nearGood }, DEFAULT_POLICY);
    expect(informed.priorAlpha / (informed.priorAlpha + informed.priorBeta)).toBeGreaterThan(plain.priorAlpha / (plain.priorAlpha + plain.priorBeta));
    // Nothing measured has a vector: no prior from neighbours.
    expect(m.exp.neighbourPrior(vectors.get(C.id)!, () => undefined)).toBeUndefined();
  });
});

describe('embedding in the real sidecar', () => {
  const computed = async (client: PortClient): Promise<number> => {
    const r = await client.request('stats', record({}));
    if (!r.ok) throw new Error(r.message);
    // A service appears in `stats` once started.
    const embeddings = ((r.value as TermObject).services as TermObject).embeddings as TermObject | undefined;
    return Number(embeddings?.computed ?? 0);
  };

  it('stops embedding the unseen prompts of a cancelled score, and a score after it does not wait behind them', async () => {
    const client = new PortClient({ env: { ...sidecarStoreEnv('embeddings.test'), LOG_LEVEL: 'warn' } });
    try {
      await client.ready;
      const tag = `${process.pid}-${Date.now()}`;
      // 5,000 prompts never seen: minutes of the worker, were they all computed.
      const prompts = Array.from({ length: 5_000 }, (_, i) => `Prompt ${i} of a batch nobody waits for (${tag}): answer in one word.`);
      const id = client.peekId();
      const big = client.request('score', record({ prompts }));
      await until(async () => (await computed(client)) > 0, 120_000, 50);
      client.cancel(id);
      expect(await big).toMatchObject({ ok: false, reason: 'cancelled' });
      // The next unseen prompt waits for the chunk at hand, not for the batch.
      const one = await client.request('score', record({ prompt: `One more prompt, never seen (${tag}).` }));
      expect(one.ok).toBe(true);
      const after = await computed(client);
      await new Promise((r) => setTimeout(r, 3_000));
      expect(await computed(client)).toBe(after);
      expect(after).toBeLessThan(200);
    } finally {
      await client.close();
    }
  }, 180_000);
});
