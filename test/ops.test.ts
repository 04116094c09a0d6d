/**
 * The op table's contract with its callers: every op declares its
 * arguments, a key it does not declare is refused with the known keys
 * listed (before any service starts), the validators read no key they do
 * not declare, `describe` answers from the same data, and docs/ops.md is
 * exactly what the table generates (so the docs cannot drift).
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { fromJson } from '../src/codec/json.js';
import { isTermObject, type Term, type TermObject } from '../src/codec/terms.js';
import { REPO_ROOT } from '../src/config.js';
import { COPRO_DEFAULTS } from '../src/optimizer/copro.js';
import { describeOps, opsMarkdown } from '../src/ops/describe.js';
import { createOpTable } from '../src/ops/index.js';
import { localEngine } from './helpers/engine.js';
import { keysRead } from './helpers/keysRead.js';

const table = createOpTable();
const specs = table.specs;
const eng = localEngine();
afterAll(() => eng.close());

describe('op schemas', () => {
  it('every op has a summary, a reply shape and at least one valid example', () => {
    for (const s of specs) {
      expect(s.summary.length, s.name).toBeGreaterThan(5);
      expect(s.reply.length, s.name).toBeGreaterThan(1);
      expect(s.examples?.length ?? 0, `${s.name} has no example`).toBeGreaterThan(0);
      for (const ex of s.examples ?? []) expect(table.check(s.name, fromJson(ex)), `${s.name} ${JSON.stringify(ex)}`).toBeUndefined();
    }
  });

  it('validators read only the keys their op declares', () => {
    // The recorder itself: it sees optional keys that are absent as well as present ones.
    const seen = keysRead(table.specs.find((s) => s.name === 'optimize_prompt')!, fromJson({ prompt: 'x' }) as TermObject);
    expect([...seen]).toEqual(expect.arrayContaining(['prompt', 'breadth', 'llm', 'devset', 'cache']));
    const undeclared: string[] = [];
    for (const s of specs) {
      if (s.openArgs) continue;
      for (const ex of s.examples ?? []) {
        for (const k of keysRead(s, fromJson(ex) as TermObject)) if (!(k in s.args)) undeclared.push(`${s.name}.${k}`);
      }
    }
    expect(undeclared).toEqual([]);
  });

  it('every op but echo refuses an unknown key, naming it and listing the known ones, before any service starts', async () => {
    for (const s of specs) {
      const args = fromJson({ ...(s.examples![0] as object), bredth: 8 });
      const r = await eng.call(s.name, args);
      if (s.openArgs) {
        expect(r.ok, s.name).toBe(true);
        continue;
      }
      expect(r, s.name).toMatchObject({ ok: false, reason: 'bad_request' });
      if (r.ok) continue;
      expect(r.message).toMatch(new RegExp(`^bredth: unknown argument of ${s.name}`));
      const known = Object.keys(s.args).sort();
      expect(r.message).toContain(known.length === 0 ? 'it takes no arguments' : `known: ${known.join(', ')}`);
    }
    expect(eng.engine.startedServices).toEqual([]);
  });

  it('suggests the key a typo meant, also inside a declared map', async () => {
    const r = await eng.call('optimize_prompt', fromJson({ prompt: 'x', bredth: 8 }));
    expect(r).toMatchObject({ ok: false, reason: 'bad_request' });
    expect(!r.ok && r.message).toMatch(/^bredth: unknown argument of optimize_prompt \(did you mean breadth\?\); known: breadth, budget, cache, context, /);
    const nested = await eng.call('optimize_prompt', fromJson({ prompt: 'x', llm: { urll: 'http://127.0.0.1:1' } }));
    expect(!nested.ok && nested.message).toMatch(/^llm\.urll: unknown argument of optimize_prompt llm \(did you mean llm\.url\?\); known: api_key, model, timeout_ms, url$/);
    const track = await eng.call('track_execution', fromJson({ prompt_id: 'p', success: true, execution_time_ms: 1, sucess: true }));
    expect(!track.ok && track.message).toMatch(/^sucess: unknown argument of track_execution \(did you mean success\?\)/);
  });

  it('checks keys on the path that validates without running (NATS tracking)', () => {
    expect(table.check('track_feedback', fromJson({ prompt_id: 'p', feedback_type: 'quality', rating: 4, ratting: 5 }))).toMatchObject({ reason: 'bad_request' });
  });
});

describe('describe', () => {
  it('answers every op with its arguments from the table', async () => {
    const r = await eng.call('describe', fromJson({}));
    expect(r.ok).toBe(true);
    const ops = (r.ok ? (r.value as TermObject).ops : []) as TermObject[];
    expect(ops.map((o) => o.name)).toEqual(table.names);
    const opt = ops.find((o) => o.name === 'optimize_prompt')!;
    const breadth = (opt.args as TermObject[]).find((a) => a.name === 'breadth')!;
    expect(breadth).toMatchObject({ type: 'integer 1..50', required: false, default: COPRO_DEFAULTS.breadth });
  });

  it('describes one op, or says which exist', async () => {
    const one = await eng.call('describe', fromJson({ op: 'train' }));
    expect(one.ok && ((one.value as TermObject).ops as Term[]).length).toBe(1);
    const none = await eng.call('describe', fromJson({ op: 'trian' }));
    expect(none).toMatchObject({ ok: false, reason: 'not_found' });
    expect(!none.ok && none.message).toContain('known: cache_clear');
  });

  it('docs/ops.md is what the op table generates (npm run docs:ops rewrites it)', () => {
    const onDisk = fs.readFileSync(path.join(REPO_ROOT, 'docs', 'ops.md'), 'utf8');
    expect(onDisk).toBe(opsMarkdown(describeOps(table)));
  });

  it('describe replies are plain terms (they encode for the Port)', async () => {
    const r = await eng.call('describe', fromJson({ op: 'store_template' }));
    expect(r.ok && isTermObject(r.value)).toBe(true);
  });
});
