/**
 * The learned scorer: P(success) of prompts in a context, served by
 * onnxruntime-node in batches. It serves the last promoted model of the
 * registry, else the shipped default, and refuses a model whose feature
 * spec hash is not the one this build computes.
 */
import ort from 'onnxruntime-node';
import { featureDim, featurize, FEATURE_SPEC, specHash, toDense } from './features.js';
import type { ModelMeta } from './modelFile.js';

export interface ScoreItem {
  prompt: string;
  context: Record<string, string>;
}

export class Scorer {
  private constructor(
    private session: ort.InferenceSession,
    private meta: ModelMeta,
  ) {}

  static async load(onnx: Uint8Array, meta: ModelMeta): Promise<Scorer> {
    checkSpec(meta);
    return new Scorer(await ort.InferenceSession.create(onnx, { intraOpNumThreads: 1, interOpNumThreads: 1 }), meta);
  }

  get modelVersion(): string {
    return this.meta.version;
  }

  get info(): ModelMeta {
    return this.meta;
  }

  /** Swap in a newly promoted model. */
  async replace(onnx: Uint8Array, meta: ModelMeta): Promise<void> {
    checkSpec(meta);
    const next = await ort.InferenceSession.create(onnx, { intraOpNumThreads: 1, interOpNumThreads: 1 });
    const old = this.session;
    this.session = next;
    this.meta = meta;
    await old.release();
  }

  async score(items: ScoreItem[]): Promise<{ p: number[]; modelVersion: string }> {
    const version = this.meta.version;
    if (items.length === 0) return { p: [], modelVersion: version };
    const dim = featureDim(FEATURE_SPEC);
    const out: number[] = [];
    for (let i = 0; i < items.length; i += 256) {
      const batch = items.slice(i, i + 256);
      const x = toDense(batch.map((it) => featurize(it.prompt, it.context)), dim);
      const r = await this.session.run({ features: new ort.Tensor('float32', x, [batch.length, dim]) });
      out.push(...Array.from(r.p!.data as Float32Array));
    }
    return { p: out, modelVersion: version };
  }

  private readonly closers: Array<() => Promise<void>> = [];

  /** Run `f` when the scorer closes (e.g. stop following promotions). */
  onClose(f: () => Promise<void>): void {
    this.closers.push(f);
  }

  async close(): Promise<void> {
    for (const f of this.closers.splice(0)) await f().catch(() => undefined);
    await this.session.release();
  }
}

function checkSpec(meta: ModelMeta): void {
  if (meta.feature_spec_hash !== specHash(FEATURE_SPEC))
    throw new Error(`model ${meta.version} was trained with feature spec ${meta.feature_spec_hash}; this build computes ${specHash(FEATURE_SPEC)}`);
}
