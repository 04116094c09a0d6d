/**
 * The learned scorer: ONNX parity with the TS forward pass, the versioned
 * feature spec, and `train`/`score` through the op table on a real store
 * (PGlite): promotion only when no worse, the model_trained event, a restart
 * serving the last promoted model, cancellation, too little data.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErlFloat, record, type Term, type TermObject } from '../src/codec/terms.js';
import { REPO_ROOT } from '../src/config.js';
import { featureDim, FEATURE_SPEC } from '../src/learning/features.js';
import { readModel } from '../src/learning/modelFile.js';
import { forwardDense, initWeights, seeded } from '../src/learning/mlp.js';
import { exportOnnx, readOnnxWeights } from '../src/learning/onnx.js';
import { Scorer } from '../src/learning/scorer.js';
import { localEngine, type LocalEngine } from './helpers/engine.js';
import { PortClient } from './helpers/portClient.js';
import { sidecarStoreEnv } from './helpers/pg.js';
import { okValue } from './helpers/results.js';

const ok = okValue;
const num = (t: unknown): number => (t instanceof ErlFloat ? t.value : (t as number));

describe('ONNX export', () => {
  it('agrees with the TypeScript forward pass to 1e-5 on 1,000 random inputs (fresh and shipped models)', async () => {
    const D = featureDim(FEATURE_SPEC);
    const shipped = readOnnxWeights(readModel(path.join(REPO_ROOT, 'models', 'default.onnx')).onnx);
    for (const m of [initWeights(D, 64, 32, seeded(5)), shipped]) {
      const session = await ort.InferenceSession.create(exportOnnx(m, 'parity'));
      const rnd = seeded(11);
      const N = 1000;
      const x = new Float32Array(N * D);
      for (let i = 0; i < x.length; i++) if (rnd() < 0.02) x[i] = rnd() * 2 - 0.5;
      const out = (await session.run({ features: new ort.Tensor('float32', x, [N, D]) })).p!.data as Float32Array;
      let maxDiff = 0;
      for (let i = 0; i < N; i++) maxDiff = Math.max(maxDiff, Math.abs(out[i]! - forwardDense(m, x.subarray(i * D, (i + 1) * D))));
      expect(maxDiff).toBeLessThan(1e-5);
      await session.release();
    }
  });

  it('refuses to serve a model trained with another feature spec', async () => {
    const { onnx, meta } = readModel(path.join(REPO_ROOT, 'models', 'default.onnx'));
    await expect(Scorer.load(onnx, { ...meta, feature_spec_hash: 'deadbeefdeadbeef' })).rejects.toThrow(/feature spec/);
    expect(meta.feature_spec.version).toBe(FEATURE_SPEC.version);
  });
});

describe('train and score through the op table', () => {
  let pe: LocalEngine;
  const events: Array<{ name: string; payload: TermObject }> = [];
  // Synthetic history the shipped model knows nothing about: prompts that ask for
  // "exactly one word" succeed for this model, the others fail.
  const prompts = Array.from({ length: 80 }, (_, i) =>
    i % 2 === 0 ? `Variant ${i}: answer with exactly one word about {topic}.` : `Variant ${i}: please write a long rambling essay about {topic}.`,
  );

  beforeAll(async () => {
    // The suite's PostgreSQL when there is one: this is about training, not the backend (a fresh PGlite store costs seconds).
    pe = localEngine({}, { postgres: true });
    pe.engine.events.on('event', (e: { name: string; payload: TermObject }) => events.push(e));
    for (const [i, p] of prompts.entries())
      ok(await pe.call('track_execution', record({ prompt_id: `syn-${i}`, execution_time_ms: 10, success: i % 2 === 0, metadata: { prompt: p, model: 'synthetic-1', task: 'synthetic', n: '50', successes: String(i % 2 === 0 ? 45 : 5) } as unknown as Term })));
  });
  afterAll(() => pe.close());

  it('scores one prompt or a batch with floats and the serving model version', async () => {
    const one = ok(await pe.call('score', record({ prompt: 'Is the sentence plausible?', context: record({ model: 'vicuna-13b', task: 'sports_understanding' }) })));
    expect(one.score).toBeInstanceOf(ErlFloat);
    expect(String(one.model_version)).toMatch(/^default-/);
    const many = ok(await pe.call('score', record({ prompts: ['a', 'b', 'c'] })));
    expect((many.scores as unknown[]).length).toBe(3);
    expect(await pe.call('score', record({}))).toMatchObject({ ok: false, reason: 'bad_request' });
  });

  it('refuses to train on too little data', async () => {
    expect(await pe.call('train', record({ min_samples: 100_000 }))).toMatchObject({ ok: false, reason: 'insufficient_data' });
  });

  it('cancels training through the abort signal', async () => {
    const ctl = new AbortController();
    const p = pe.call('train', record({ epochs: 200, min_samples: 10 }), ctl.signal);
    setTimeout(() => ctl.abort(), 50);
    expect(await p).toMatchObject({ ok: false, reason: 'cancelled' });
  });

  it('trains, measures on a held-out split beside the serving model, promotes when no worse, and says so', async () => {
    const r = ok(await pe.call('train', record({ min_samples: 10, epochs: 30 })));
    const m = r.metrics as TermObject;
    const s = r.serving_metrics as TermObject;
    expect(num(m.log_loss)).toBeLessThan(num(s.log_loss)); // it learned what the default could not
    expect(r.promoted).toBe(true);
    expect(num(m.auc)).toBeGreaterThan(0.85); // soft targets 0.9 / 0.1 cap the AUC at 0.9
    expect(m.auc).toBeInstanceOf(ErlFloat);
    expect(events.find((e) => e.name === 'model_trained')?.payload.model_version).toBe(r.model_version);
    const after = ok(await pe.call('score', record({ prompts: ['Variant 999: answer with exactly one word about {topic}.', 'Variant 998: please write a long rambling essay about {topic}.'], context: record({ model: 'synthetic-1', task: 'synthetic' }) })));
    expect(after.model_version).toBe(r.model_version);
    const [good, bad] = (after.scores as ErlFloat[]).map((x) => x.value);
    expect(good!).toBeGreaterThan(bad!);
    expect(fs.existsSync(path.join(pe.dataDir, 'models', `${String(r.model_version)}.onnx`))).toBe(true);
    // Trained on the history alone (corpus: false): the corpus tasks the shipped model never saw are still unseen, and said so.
    const written = await (await pe.engine.service('store')).models.load(String(r.model_version));
    expect(written?.meta.unseen_tasks).toEqual(['sports_understanding']);

    // the same data again: a model no better on the same split is not promoted over it
    const again = ok(await pe.call('train', record({ min_samples: 10, epochs: 1, seed: 7 })));
    expect(again.promoted).toBe(num((again.metrics as TermObject).log_loss) <= num((again.serving_metrics as TermObject).log_loss));
    // Each metric names its model: serving_metrics are those of the model that served when training began.
    expect(r.previous_version).not.toBe(r.model_version);
    expect(r.serving_version).toBe(r.model_version);
    expect(again.previous_version).toBe(r.model_version);
    expect(again.serving_version).toBe(again.promoted ? again.model_version : r.model_version);
  });

  it('serves the last promoted model after a restart', async () => {
    const models = (await (await pe.engine.service('store')).models.list()).filter((m) => m.promoted);
    const last = (await (await pe.engine.service('store')).models.promoted())!;
    expect(models.length).toBeGreaterThan(0);
    await pe.close();
    pe = localEngine({ dataDir: pe.dataDir }, { postgres: true });
    const r = ok(await pe.call('score', record({ prompt: 'x' })));
    expect(r.model_version).toBe(last.version);
  });
});

describe("train's progress in the sidecar's logs", () => {
  it('is JSON log records at info (shown under LOG_LEVEL=info, not under warn), never raw stderr lines', async () => {
    for (const level of ['info', 'warn']) {
      const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-train-log-'));
      // This is about the logs, not the backend.
      const store = sidecarStoreEnv(dataDir);
      const c = new PortClient({ env: { LOG_LEVEL: level, ...store, NATS_URL: '', PROMPT_ENGINE_DATA_DIR: dataDir } });
      await c.ready;
      for (let i = 0; i < 40; i++)
        expect(await c.request('track_execution', record({ prompt_id: `log-${i % 8}`, success: i % 3 === 0, execution_time_ms: 5, metadata: record({ prompt: `Variant ${i % 8}: answer briefly.`, model: 'm1', task: 't' }) }))).toMatchObject({ ok: true });
      expect(await c.request('train', record({ min_samples: 20, epochs: 2 }))).toMatchObject({ ok: true });
      expect((await c.close()).code).toBe(0);
      const lines = Buffer.concat(c.stderr).toString().split('\n').filter((l) => l !== '');
      expect(lines.filter((l) => !l.startsWith('{')), level).toEqual([]); // the Elixir client's relay would take raw lines for warnings
      const epochs = lines.map((l) => JSON.parse(l) as { level: number; msg: string }).filter((r) => r.msg === 'training epoch');
      if (level === 'info') {
        expect(epochs.length).toBeGreaterThanOrEqual(2); // at least one per epoch asked for
        expect(epochs.every((r) => r.level === 30)).toBe(true);
      } else expect(epochs).toEqual([]);
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }, 180_000);
});
