/**
 * Validation refuses what storage cannot hold, at the edge, naming the
 * field: a NUL (U+0000) or a lone UTF-16 surrogate in any text argument of
 * any op — a string, an item of a list, a value or a key of a map, at any
 * depth — is `bad_request` before any service starts. The cases are derived
 * from the op table (every op, every declared argument, the nested keys of
 * declared maps), so a new op or argument is covered without touching this
 * file; an argument no example of its op reads is itself a failure.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { fromJson, type Json } from '../src/codec/json.js';
import type { TermObject } from '../src/codec/terms.js';
import type { ArgSchema, ArgSpec, Shape } from '../src/contract/schema.js';
import { createOpTable } from '../src/ops/index.js';
import { localEngine } from './helpers/engine.js';
import { keysRead } from './helpers/keysRead.js';

const table = createOpTable();
const eng = localEngine();
afterAll(() => eng.close());

/** Text arguments known not to be checked yet, with the module that reads them (empty: every op and entry reads by its typed spec). */
const PENDING: Record<string, string> = {};

type JsonObject = { [k: string]: Json };
const isObject = (v: Json | undefined): v is JsonObject => v !== null && typeof v === 'object' && !Array.isArray(v);

/** A plausible value of a text argument absent from every example, from its typed shape; undefined: not text. */
function sampleShape(s: Shape): Json | undefined {
  switch (s.kind) {
    case 'string':
      return 'x'.repeat(Math.max(1, s.min ?? 1));
    case 'enum':
      return s.values[0]!;
    case 'list': {
      const item = sampleShape(s.of);
      return item === undefined ? undefined : [item];
    }
    case 'record':
      return sampleMap(s.keys);
    case 'string_map':
    case 'variables':
      return { k: 'v' };
    case 'either':
      return s.of.map(sampleShape).find((x) => x !== undefined);
    default:
      return undefined; // numbers, booleans; `any` is kept as given (cache_put's value), never stored as text
  }
}

/** The same for a spec declared only (no shape): from its words, for the ops not yet moved to typed specs. */
function sample(spec: ArgSpec): Json | undefined {
  if (spec.shape !== undefined) return sampleShape(spec.shape);
  if (spec.keys !== undefined) return sampleMap(spec.keys);
  const t = spec.type;
  const oneOf = /^one of: ([^,\s(]+)/.exec(t);
  if (oneOf !== null) return oneOf[1]!;
  if (/^list of strings|^string or list of strings/.test(t)) return ['x'];
  if (/^map of string → number/.test(t)) return { k: 1 };
  if (/^map/.test(t)) return { k: 'v' };
  if (/string/.test(t)) return 'x';
  return undefined;
}
function sampleMap(keys: ArgSchema): JsonObject {
  const out: JsonObject = {};
  for (const [k, s] of Object.entries(keys)) {
    const v = sample(s);
    if (v !== undefined) out[k] = v;
  }
  return out;
}

interface Poisoned {
  value: Json;
  /** The field the error must name. */
  path: string;
  what: string;
}

/** Every way to put `bad` in one text leaf of `v`: each string, and each map key. */
function* poisonings(v: Json, bad: string, path: string): Generator<Poisoned> {
  if (typeof v === 'string') yield { value: `${v.slice(0, 1)}${bad}${v.slice(1)}`, path, what: 'value' };
  else if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) for (const p of poisonings(v[i]!, bad, `${path}[${i}]`)) yield { ...p, value: v.map((x, j) => (j === i ? p.value : x)) };
  } else if (isObject(v)) {
    for (const k of Object.keys(v)) {
      for (const p of poisonings(v[k]!, bad, `${path}.${k}`)) yield { ...p, value: { ...v, [k]: p.value } };
      const renamed: JsonObject = {};
      for (const [kk, x] of Object.entries(v)) renamed[kk === k ? `${k}${bad}` : kk] = x;
      yield { value: renamed, path, what: 'key' };
    }
  }
}

interface Case {
  op: string;
  arg: string;
  args: Json;
  path: string;
  /** Also accepted as the field's name: the argument it is an alias of. */
  canonical?: string;
  what: string;
}

/** Every (op, argument, leaf) with `bad` in it, in an example of the op that reads the argument. */
function cases(bad: string): { cases: Case[]; unread: string[] } {
  const out: Case[] = [];
  const unread: string[] = [];
  for (const spec of table.specs) {
    if (spec.openArgs) continue; // echo returns what it is given
    for (const [arg, argSpec] of Object.entries(spec.args)) {
      if (argSpec.shape?.kind === 'any' || /^any term/.test(argSpec.type)) continue; // kept as given (cache_put's value), never stored as text
      let covered = false;
      for (const ex of spec.examples ?? []) {
        if (!isObject(ex)) continue;
        const base: JsonObject = { ...ex };
        if (argSpec.aliasOf !== undefined) delete base[argSpec.aliasOf];
        if (!keysRead(spec, fromJson(base) as TermObject, { untilFailure: true }).has(arg)) continue;
        const given = base[arg];
        const s = sample(argSpec);
        const value = isObject(given) && isObject(s) ? { ...s, ...given } : (given ?? s);
        if (value === undefined) {
          covered = true; // not text
          break;
        }
        covered = true;
        for (const p of poisonings(value, bad, arg))
          out.push({ op: spec.name, arg, args: { ...base, [arg]: p.value }, path: p.path, canonical: argSpec.aliasOf, what: p.what });
        break;
      }
      if (!covered) unread.push(`${spec.name} ${arg}`);
    }
  }
  return { cases: out, unread };
}

const named = (message: string, c: Case): boolean =>
  message.startsWith(c.path) || (c.canonical !== undefined && message.startsWith(c.path.replace(c.arg, c.canonical))) || message.startsWith(`${c.path}[`);

describe.each([
  ['a NUL (U+0000)', '\u0000'],
  ['a lone UTF-16 surrogate', '\uD800'],
])('%s in any text argument of any op', (_what, bad) => {
  it('is refused with bad_request naming the field by validation alone, before the op runs', () => {
    const { cases: all, unread } = cases(bad);
    // Every declared argument is read by some example of its op (else this test could not reach it).
    expect(unread).toEqual([]);
    expect(all.length).toBeGreaterThan(150);
    const wrong: string[] = [];
    const pending = new Set<string>();
    for (const c of all) {
      // The table's check: the key check and the op's validate, as every transport runs them before the op.
      const r = table.check(c.op, fromJson(c.args));
      const label = `${c.op} ${c.path}${c.what === 'key' ? ' (key)' : ''}`;
      if (r !== undefined && r.reason === 'bad_request' && named(r.message, c)) continue;
      if (PENDING[label] !== undefined) pending.add(label);
      else wrong.push(`${label}: ${r === undefined ? 'accepted' : `${r.reason}: ${r.message}`}`);
    }
    expect(wrong).toEqual([]);
    // A pending entry that now passes must leave the list.
    expect([...pending].sort()).toEqual(Object.keys(PENDING).sort());
  });
});

describe('the readers', () => {
  it('say why in the message, for a value and for a key', async () => {
    const nul = await eng.call('track_execution', fromJson({ prompt_id: 'p\u0000', success: true, execution_time_ms: 1 }));
    expect(nul).toEqual({ ok: false, reason: 'bad_request', message: 'prompt_id: contains U+0000 (NUL), which text cannot hold' });
    const key = await eng.call('track_execution', fromJson({ prompt_id: 'p', success: true, execution_time_ms: 1, metadata: { 'mo\u0000del': 'x' } }));
    expect(key).toEqual({ ok: false, reason: 'bad_request', message: 'metadata: the key "mo\\u0000del" contains U+0000 (NUL), which text cannot hold' });
    const deep = await eng.call('render_template', fromJson({ template_id: 'general_command', variables: { arguments: { 'a b': ['ok', 'x\uDC00'] } } }));
    expect(deep).toEqual({ ok: false, reason: 'bad_request', message: 'variables.arguments["a b"][1]: contains a lone UTF-16 surrogate, which is not valid Unicode' });
    // Text that is merely unusual is fine: a paired surrogate (an emoji), other control characters.
    const fine = await eng.call('cache_get', fromJson({ key: 'ok \uD83D\uDE00 \u0001\t' }));
    expect(fine.ok).toBe(true);
  });
});
