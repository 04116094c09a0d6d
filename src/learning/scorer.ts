/**
 * The learned scorer: P(success) of prompts in a context, served by
 * onnxruntime-node in batches. It serves the last promoted model of the
 * registry, else the shipped default, and refuses a model whose feature
 * spec hash is not the one this build computes. A hot swap never pulls a
 * session from under a request: each request scores every batch with the
 * model it started with, and a replaced session is released when its last
 * request is done.
 */
import ort from 'onnxruntime-node';
import { featureDim, featurize, FEATURE_SPEC, specHash, toDense } from './features.js';
import type { ModelMeta } from './modelFile.js';

export interface ScoreItem {
  prompt: string;
  context: Record<string, string>;
}

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
  private constructor(private current: Loaded) {}

  static async load(onnx: Uint8Array, meta: ModelMeta): Promise<Scorer> {
    checkSpec(meta);
    return new Scorer({ session: await createSession(onnx), meta, users: 0, retired: false });
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

  async score(items: ScoreItem[]): Promise<{ p: number[]; modelVersion: string }> {
    const m = this.current;
    if (items.length === 0) return { p: [], modelVersion: m.meta.version };
    m.users++;
    try {
      const dim = featureDim(FEATURE_SPEC);
      const out: number[] = [];
      for (let i = 0; i < items.length; i += 256) {
        const batch = items.slice(i, i + 256);
        const x = toDense(batch.map((it) => featurize(it.prompt, it.context)), dim);
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
