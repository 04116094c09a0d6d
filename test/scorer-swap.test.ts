/**
 * A hot swap of the scorer's model while requests are scoring (a promotion
 * arriving from another instance under load): every request finishes on the
 * model it started with, none sees a released session, and the old session
 * is released once its last request is done.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../src/config.js';
import { readModel } from '../src/learning/modelFile.js';
import { Scorer } from '../src/learning/scorer.js';

describe('scorer hot swap', () => {
  it('swaps models under load without failing a request, each request scored by one model', async () => {
    const { onnx, meta } = readModel(path.join(REPO_ROOT, 'models', 'default.onnx'));
    const scorer = await Scorer.load(onnx, meta);
    const items = Array.from({ length: 600 }, (_, i) => ({ prompt: `Answer question ${i} about {topic} in one word.`, context: { model: 'm', task: 't' } }));
    const versions = ['v-a', 'v-b', 'v-c', 'v-d'];
    const requests: Array<Promise<{ p: number[]; modelVersion: string }>> = [];
    for (const [i, v] of versions.entries()) {
      for (let k = 0; k < 4; k++) requests.push(scorer.score(items)); // three batches each: a swap lands between them
      await scorer.replace(onnx, { ...meta, version: v });
      expect(scorer.modelVersion).toBe(versions[i]);
    }
    requests.push(scorer.score(items));
    const results = await Promise.all(requests);
    for (const r of results) {
      expect(r.p).toHaveLength(items.length);
      expect(r.p.every((x) => x > 0 && x < 1)).toBe(true);
    }
    // the same bytes under every version: a request mixing sessions would still agree, so check the versions reported
    expect(results.slice(0, 4).every((r) => r.modelVersion === meta.version)).toBe(true);
    expect(results.at(-1)!.modelVersion).toBe('v-d');
    await scorer.close();
  });
});
