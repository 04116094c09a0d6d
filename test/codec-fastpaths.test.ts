/**
 * The decoder's fast paths (string tables, map shapes, generated builders)
 * change nothing but speed: with each switched off (`configureDecoder`), and
 * all of them, every input decodes to the same term — compared by its
 * re-encoding, byte for byte, which carries atom keys and types — or fails
 * with the same error (code, message, offset). Record-heavy payloads are
 * decoded often enough for shapes to get builders, and maps leave their
 * shapes part way. The source a builder is generated from is shown here as
 * text (an inline snapshot), so a change to the generator is reviewed.
 */
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { configureDecoder, decode, type DecoderFastPaths } from '../src/codec/decode.js';
import { encode } from '../src/codec/encode.js';
import { EtfError } from '../src/codec/format.js';
import { builderSource, extend, pathOf, resetShapes, shapeRoot, type Shape } from '../src/codec/shapes.js';
import { Atom, ErlFloat, newMap, record, Tuple, type Term } from '../src/codec/terms.js';
import { seededRandom } from '../src/random.js';

afterAll(() => configureDecoder({ stringTables: true, shapes: true, codegen: true }));

const COMBOS: Array<[string, DecoderFastPaths]> = [
  ['all on', { stringTables: true, shapes: true, codegen: true }],
  ['no string tables', { stringTables: false, shapes: true, codegen: true }],
  ['no builders', { stringTables: true, shapes: true, codegen: false }],
  ['no shapes', { stringTables: true, shapes: false, codegen: false }],
  ['all off', { stringTables: false, shapes: false, codegen: false }],
];

/** What decoding `bytes` gives: the re-encoded term, or the error. */
function outcome(bytes: Buffer): string {
  try {
    return `ok ${encode(decode(bytes)).toString('hex')}`;
  } catch (err) {
    if (!(err instanceof EtfError)) throw err;
    return `error ${err.code} ${err.message} @${err.offset}`;
  }
}

const termArb: fc.Arbitrary<Term> = fc.letrec<{ term: Term }>((tie) => ({
  term: fc.oneof(
    { maxDepth: 4, depthIdentifier: 'term' },
    fc.constantFrom<Term>(null, true, false, []),
    fc.integer(),
    fc.double({ noNaN: true, noDefaultInfinity: true }).map((x) => new ErlFloat(x)),
    fc.string({ unit: 'grapheme', maxLength: 40 }),
    fc.string({ unit: 'grapheme-ascii', maxLength: 40 }),
    fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 20 }).map((s) => Atom.of(`a_${s}`)),
    fc.array(tie('term'), { maxLength: 5 }),
    fc.array(tie('term'), { maxLength: 5 }).map((xs) => new Tuple(xs)),
    fc.dictionary(fc.string({ maxLength: 8 }), tie('term'), { maxKeys: 5 }).map((d) => {
      const m = newMap();
      for (const k of Object.keys(d)) m[k] = d[k]!;
      return m;
    }),
  ),
})).term;

/** Lists of records of one kind, some leaving the shape part way (a different key, an extra key, a nested record). */
function records(variant: number): Buffer {
  return encode(
    Array.from({ length: 40 }, (_, i) =>
      record({
        id: `0b8e7c1e-5f0e-4c1b-9a7e-${String(100000000000 + i)}`,
        prompt_id: `p_${i % 17}`,
        success: i % 3 !== 0,
        confidence_score: new ErlFloat(0.5 + (i % 50) / 100),
        ...(i % 7 === variant % 7 ? { extra: 'x' } : {}),
        ...(i % 11 === 0 ? { metadata: record({ model: 'vicuna-13b', task: `t${i % 3}` }) } : { timestamp: '2026-11-24T12:00:00.000Z' }),
      }),
    ),
  );
}

describe('decoder fast paths', () => {
  it('change nothing: the same term or the same error for every input, with each path on or off', () => {
    const inputs: Buffer[] = [];
    fc.assert(
      fc.property(termArb, (t) => {
        inputs.push(encode(t));
      }),
      { numRuns: 400, seed: 24 },
    );
    for (let v = 0; v < 7; v++) for (let k = 0; k < 6; k++) inputs.push(records(v)); // enough for builders and hot readers
    // Mutations: bit flips and truncations of the inputs.
    const rnd = seededRandom(0x24);
    const pick = (n: number): number => Math.floor(rnd() * n);
    const n = inputs.length;
    for (let i = 0; i < 2 * n; i++) {
      const base = Buffer.from(inputs[pick(n)]!);
      if (i % 2 === 0) {
        const at = pick(base.length);
        base[at] = base[at]! ^ (1 << pick(8));
      }
      inputs.push(i % 4 === 1 ? base.subarray(0, pick(base.length)) : base);
    }
    const expected: string[] = [];
    const differences: string[] = [];
    for (const [name, paths] of COMBOS) {
      configureDecoder(paths);
      inputs.forEach((bytes, i) => {
        const got = outcome(bytes);
        if (name === 'all on') expected[i] = got;
        else if (got !== expected[i]) differences.push(`${name} #${i} ${bytes.toString('hex').slice(0, 80)}: ${got.slice(0, 80)} vs ${expected[i]!.slice(0, 80)}`);
      });
    }
    expect(differences).toEqual([]);
    expect(inputs.length).toBeGreaterThan(1000);
  });

  it('generates a builder whose source is this (keys only as JSON string literals, their bytes only as integers)', () => {
    configureDecoder({ stringTables: true, shapes: true, codegen: true });
    resetShapes();
    let shape: Shape = shapeRoot();
    for (const [key, atomKey] of [['id', true], ['prompt', true], ['a "quoted" key', false]] as const) {
      const name = Buffer.from(key);
      const wire = atomKey ? Buffer.concat([Buffer.from([119, name.length]), name]) : Buffer.concat([Buffer.from([109, 0, 0, 0, name.length]), name]);
      shape = extend(shape, key, atomKey, wire, 0, wire.length)!;
    }
    expect(builderSource(pathOf(shape))).toMatchInlineSnapshot(`
      "'use strict';
      const value = rt.value, getPos = rt.pos, setPos = rt.setPos, left = rt.left, getView = rt.view, getBuf = rt.buf, vs = rt.values;
      function B(v0, v1, v2) { this["id"] = v0; this["prompt"] = v1; this["a \\"quoted\\" key"] = v2; }
      B.prototype = proto;
      return {
        make: function (v, a) { return new B(v[a + 0], v[a + 1], v[a + 2]); },
        read: function (d, a) { const dv = getView(); const b = getBuf(); let p = 0; p = getPos(); if (left() < 4 || dv.getInt32(p + 0) !== 1996646756) {  return 0; } setPos(p + 4); const v0 = value(d); p = getPos(); if (left() < 8 || dv.getInt32(p + 0) !== 1996910706 || dv.getInt32(p + 4) !== 1869443188) { vs[a + 0] = v0; return 1; } setPos(p + 8); const v1 = value(d); p = getPos(); if (left() < 19 || dv.getInt32(p + 0) !== 1828716544 || dv.getInt32(p + 4) !== 241246242 || dv.getInt32(p + 8) !== 1903521652 || dv.getInt32(p + 12) !== 1701061152 || dv.getInt32(p + 15) !== 543909241) { vs[a + 0] = v0; vs[a + 1] = v1; return 2; } setPos(p + 19); const v2 = value(d); return new B(v0, v1, v2); },
      };"
    `);
  });
});
