/**
 * The learned scorer: P(success) of prompts in a context, served by
 * onnxruntime-node in batches. It serves the last promoted model of the
 * registry, else the shipped default, and refuses a model whose feature
 * spec hash is not the one this build computes. A hot swap never pulls a
 * session from under a request: each request scores every batch with the
 * model it started with, and a replaced session is released when its last
 * request is done.
 *
 * Features v3 read the prompt's embedding and its base's (a score item may
 * name the base it is compared with: the experiment's base, the task's
 * default prompt); they come from the embedding service, cached. When the
 * service fails, the prompts are scored without them (a warning is logged).
 */
import ort from 'onnxruntime-node';
import { ShuttingDownError } from '../engine.js';
import { baseParts, featureDim, featurize, FEATURE_SPEC, specHash, toDense, type BaseParts } from './features.js';
import type { ModelMeta } from './modelFile.js';
import { EMBED_MAX_TEXTS } from './embeddings.js';

export interface ScoreItem {
  prompt: string;
  context: Record<string, string>;
  /** The prompt it is a variant of (absent: the prompt is its own base). */
  base?: string;
}

/** Vectors of texts (the embedding service's `embed`); `signal` aborted: rejects, and stops what only this call waits for. */
export type Embed = (texts: string[], signal?: AbortSignal) => Promise<Float32Array[]>;

/** A loaded model and the requests scoring with it. */
interface Loaded {
  session: ort.InferenceSession;
  meta: ModelMeta;
  users: number;
  /** Replaced or closed: release the session when the last user is done. */
  retired: boolean;
}

const createSession = (onnx: Uint8Array): Promise<ort.InferenceSession> => ort.InferenceSession.create(onnx, { intraOpNumThreads: 1, interOpNumThreads: 1 });

export class Scorer {
  private constructor(
    private current: Loaded,
    private readonly embed: Embed | undefined,
    private readonly log: { warn(o: object, m: string): void } | undefined,
  ) {}

  static async load(onnx: Uint8Array, meta: ModelMeta, embed?: Embed, log?: { warn(o: object, m: string): void }): Promise<Scorer> {
    checkSpec(meta);
    return new Scorer({ session: await createSession(onnx), meta, users: 0, retired: false }, embed, log);
  }

  /** The vectors of every prompt and base of `items` (none when the spec reads none, or the service failed); rejects once `signal` is aborted. */
  private async vectors(items: ScoreItem[], signal?: AbortSignal): Promise<Map<string, Float32Array>> {
    const out = new Map<string, Float32Array>();
    if (FEATURE_SPEC.embedding === undefined || this.embed === undefined) return out;
    const texts = [...new Set(items.flatMap((it) => (it.base === undefined ? [it.prompt] : [it.prompt, it.base])))];
    try {
      for (let i = 0; i < texts.length; i += EMBED_MAX_TEXTS) {
        const batch = texts.slice(i, i + EMBED_MAX_TEXTS);
        (await this.embed(batch, signal)).forEach((v, k) => out.set(batch[k]!, v));
      }
    } catch (err) {
      // The request was cancelled or expired: nobody reads its scores.
      if (signal?.aborted) throw err;
      // Once a minute at most: the calls waiting on the service fail together; not at all while the engine shuts down.
      if (!(err instanceof ShuttingDownError) && Date.now() - this.embedWarnedAt >= 60_000) {
        this.embedWarnedAt = Date.now();
        this.log?.warn({ err: (err as Error).message }, 'scoring without prompt embeddings: the embedding service failed');
      }
      out.clear();
    }
    return out;
  }

  get modelVersion(): string {
    return this.current.meta.version;
  }

  get info(): ModelMeta {
    return this.current.meta;
  }

  /** Swap in a newly promoted model; requests already scoring finish on the old one. */
  async replace(onnx: Uint8Array, meta: ModelMeta): Promise<void> {
    checkSpec(meta);
    const next: Loaded = { session: await createSession(onnx), meta, users: 0, retired: false };
    const old = this.current;
    this.current = next;
    await retire(old);
  }

  /** P(success) of each item; `signal` (the request's) stops the embedding of prompts not seen before when it is aborted. */
  async score(items: ScoreItem[], signal?: AbortSignal): Promise<{ p: number[]; modelVersion: string }> {
    const m = this.current;
    if (items.length === 0) return { p: [], modelVersion: m.meta.version };
    m.users++;
    try {
      const dim = featureDim(FEATURE_SPEC);
      const vec = await this.vectors(items, signal);
      // A screened batch compares every candidate with one base: what the features read of it, once.
      const parts = new Map<string, BaseParts>();
      const partsOf = (base: string): BaseParts => parts.get(base) ?? parts.set(base, baseParts(base, FEATURE_SPEC, vec.get(base))).get(base)!;
      const out: number[] = [];
      for (let i = 0; i < items.length; i += 256) {
        const batch = items.slice(i, i + 256);
        const x = toDense(batch.map((it) => featurize(it.prompt, it.context, FEATURE_SPEC, { base: it.base, embedding: vec.get(it.prompt), baseEmbedding: vec.get(it.base ?? it.prompt), parts: it.base === undefined ? undefined : partsOf(it.base) })), dim);
        const r = await m.session.run({ features: new ort.Tensor('float32', x, [batch.length, dim]) });
        out.push(...Array.from(r.p!.data as Float32Array));
      }
      return { p: out, modelVersion: m.meta.version };
    } finally {
      m.users--;
      if (m.retired && m.users === 0) void m.session.release().catch(() => undefined);
    }
  }

  private readonly closers: Array<() => Promise<void>> = [];
  private embedWarnedAt = -Infinity;

  /** Run `f` when the scorer closes (e.g. stop following promotions). */
  onClose(f: () => Promise<void>): void {
    this.closers.push(f);
  }

  async close(): Promise<void> {
    for (const f of this.closers.splice(0)) await f().catch(() => undefined);
    await retire(this.current);
  }
}

/** Release now when nothing scores with it, else when its last request is done (in `score`). */
async function retire(m: Loaded): Promise<void> {
  if (m.retired) return;
  m.retired = true;
  if (m.users === 0) await m.session.release();
}

function checkSpec(meta: ModelMeta): void {
  if (meta.feature_spec_hash !== specHash(FEATURE_SPEC))
    throw new Error(`model ${meta.version} was trained with feature spec ${meta.feature_spec_hash}; this build computes ${specHash(FEATURE_SPEC)}`);
}
