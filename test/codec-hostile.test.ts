/**
 * The decoder on hostile input: every failure is a typed EtfError, fast,
 * without allocating what a declared length claims; property tests for
 * encode→decode round trips; a seeded fuzz of 100,000+ random and mutated
 * frames through the decoder.
 */
import fc from 'fast-check';
import { isUtf8 } from 'node:buffer';
import zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { decode, encode, EtfError, type EtfErrorCode } from '../src/codec/etf.js';
import { Atom, BitBinary, ErlFloat, ImproperList, TermMap, Tuple, atom, newMap, record, type Term } from '../src/codec/terms.js';
import { seededRandom } from '../src/random.js';
import { expectInheritsNothing } from './helpers/maps.js';

const b = (...bytes: number[]): Buffer => Buffer.from(bytes);
const u32 = (n: number): number[] => [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];

function expectCode(buf: Buffer, code: EtfErrorCode): EtfError {
  try {
    decode(buf);
  } catch (err) {
    expect(err).toBeInstanceOf(EtfError);
    expect((err as EtfError).code).toBe(code);
    return err as EtfError;
  }
  throw new Error(`decoded without error; expected ${code}`);
}

describe('hostile input', () => {
  it('rejects truncated terms at every cut point', () => {
    const full = encode(new Tuple([atom('req'), 1, atom('echo'), { a: [1, 2, 'x'], b: new ErlFloat(1.5) } as unknown as Term]));
    for (let cut = 1; cut < full.length; cut++) expectCode(full.subarray(0, cut), 'truncated');
  });

  it('rejects declared lengths larger than the input before allocating', () => {
    const huge = 0xffffffff;
    for (const tag of [108 /* list */, 105 /* large tuple */, 116 /* map */, 109 /* binary */, 111 /* large big */]) {
      const t0 = performance.now();
      const e = expectCode(b(131, tag, ...u32(huge), 0), tag === 111 ? 'too_large' : 'truncated');
      expect(performance.now() - t0).toBeLessThan(50);
      expect(e.message).toMatch(/declares|need|limit/);
    }
    expectCode(b(131, 107, 0xff, 0xff, 1, 2), 'truncated'); // STRING_EXT of 65535
    expectCode(b(131, 77, ...u32(1000), 3, 1), 'truncated'); // bit binary
    expectCode(b(131, 90, 0, 5, 119, 1, 97, 0), 'truncated'); // reference cut short
  });

  it('bounds nesting depth (10,000-deep lists, tuples and maps)', () => {
    const deepList = Buffer.concat([b(131), Buffer.from(Array.from({ length: 10_000 }, () => [108, 0, 0, 0, 1]).flat()), b(106), Buffer.alloc(10_000, 106)]);
    expect(expectCode(deepList, 'too_deep').message).toMatch(/deeper than 512/);
    const deepTuple = Buffer.concat([b(131), Buffer.from(Array.from({ length: 10_000 }, () => [104, 1]).flat()), b(106)]);
    expectCode(deepTuple, 'too_deep');
    const deepMap = Buffer.concat([b(131), Buffer.from(Array.from({ length: 10_000 }, () => [116, 0, 0, 0, 1, 97, 1]).flat()), b(106)]);
    expectCode(deepMap, 'too_deep');
    // the limit is configurable up to a hard ceiling that the JS stack can take
    const tuples = (n: number): Buffer => Buffer.concat([b(131), Buffer.from(Array.from({ length: n }, () => [104, 1]).flat()), b(106)]);
    expect(() => decode(tuples(1500), { maxDepth: 2000 })).not.toThrow();
    expectCode(tuples(1500), 'too_deep');
    expect(() => decode(deepTuple, { maxDepth: 1e9 })).toThrow(EtfError);
  });

  it('bounds decompression (zip bombs)', () => {
    // 200 MB of zeros in a ~200 KB compressed term: refused from the declared size.
    const bomb = zlib.deflateSync(Buffer.concat([b(109), Buffer.from(u32(200 * 1024 * 1024 - 5)), Buffer.alloc(200 * 1024 * 1024 - 5)]));
    const t0 = performance.now();
    expectCode(Buffer.concat([b(131, 80, ...u32(200 * 1024 * 1024)), bomb]), 'too_large');
    expect(performance.now() - t0).toBeLessThan(100);
    // A term that lies about its size: declares 100 bytes, inflates to much more. Stopped at 100.
    const liar = zlib.deflateSync(Buffer.concat([b(109), Buffer.from(u32(1_000_000)), Buffer.alloc(1_000_000)]));
    expectCode(Buffer.concat([b(131, 80, ...u32(100)), liar]), 'bad_compressed');
    expectCode(b(131, 80, 0, 0, 0, 10, 1, 2, 3), 'bad_compressed'); // not zlib
    expectCode(Buffer.concat([b(131, 80, ...u32(10_000)), bomb]), 'bad_compressed');
    // a compressed term inside a term is not valid ETF
    expectCode(b(131, 104, 1, 80, 0, 0, 0, 1, 0), 'unsupported');
  });

  it('keeps __proto__ and constructor keys away from prototypes', () => {
    const m = newMap();
    m['__proto__'] = { polluted: true } as unknown as Term;
    m['constructor'] = 'c';
    const decoded = decode(encode(m)) as Record<string, unknown>;
    expectInheritsNothing(decoded);
    expect(Object.keys(decoded).sort()).toEqual(['__proto__', 'constructor']);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.prototype.hasOwnProperty.call(Object.prototype, 'polluted')).toBe(false);
  });

  it('treats invalid UTF-8 binaries as raw bytes, and rejects invalid UTF-8 atoms', () => {
    expect(decode(b(131, 109, 0, 0, 0, 2, 0xc3, 0x28))).toEqual(Buffer.from([0xc3, 0x28]));
    expectCode(b(131, 119, 2, 0xc3, 0x28), 'bad_atom');
    expectCode(b(131, 118, 0, 2, 0xff, 0xfe), 'bad_atom');
  });

  it('decodes binaries of every length up to 40 bytes exactly, cached or not: ASCII, multi-byte UTF-8, invalid UTF-8', () => {
    const bin = (bytes: Buffer): Buffer => Buffer.concat([b(131, 109, ...u32(bytes.length)), bytes]);
    for (let round = 0; round < 2; round++)
      for (let n = 1; n <= 40; n++) {
        const ascii = Buffer.from('abcdefghijklmnopqrstuvwxyz0123456789ABCD'.slice(0, n));
        expect(decode(bin(ascii))).toBe(ascii.toString());
        // One byte changed at each position: a different string (no table slot answers for another's bytes).
        for (let i = 0; i < n; i++) {
          const other = Buffer.from(ascii);
          other[i] = 0x5f;
          expect(decode(bin(other))).toBe(other.toString());
          other[i] = 0xff; // invalid UTF-8 at any position: the bytes, never a string
          expect(decode(bin(other))).toEqual(Buffer.from(other));
          if (n >= 2) {
            other[i] = 0xc3; // é at i when i + 1 < n, else a cut sequence
            other[i + 1 < n ? i + 1 : i] = i + 1 < n ? 0xa9 : 0xc3;
            expect(decode(bin(other))).toEqual(isUtf8(other) ? other.toString() : Buffer.from(other));
          }
        }
      }
  });

  it('rejects unknown tags, funs, LOCAL_EXT, atom cache refs, non-finite floats, trailing bytes and bad versions', () => {
    expectCode(b(131, 200), 'unknown_tag');
    expectCode(b(131, 112, 0, 0, 0, 0), 'unsupported'); // NEW_FUN_EXT
    expectCode(b(131, 113, 119, 1, 109, 119, 1, 102, 97, 1), 'unsupported'); // EXPORT_EXT
    expectCode(b(131, 117, 0, 0, 0, 0), 'unsupported'); // FUN_EXT
    expectCode(b(131, 121, 1, 2, 3), 'unsupported'); // LOCAL_EXT
    expectCode(b(131, 82, 0), 'unsupported'); // ATOM_CACHE_REF
    expectCode(b(131, 70, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0), 'bad_float'); // +Inf
    expectCode(b(131, 70, 0x7f, 0xf8, 0, 0, 0, 0, 0, 1), 'bad_float'); // NaN
    expectCode(b(131, 97, 1, 0), 'trailing_bytes');
    expectCode(b(130, 97, 1), 'bad_version');
    expectCode(b(), 'truncated');
    expect(() => encode(NaN)).toThrow(EtfError);
    expect(() => encode(new ErlFloat(Infinity))).toThrow(EtfError);
    expect(() => encode((() => 1) as unknown as Term)).toThrow(EtfError);
  });
});

/** Arbitrary terms of the mapping (what the codec must round-trip). */
const termArb: fc.Arbitrary<Term> = fc.letrec<{ term: Term }>((tie) => ({
  term: fc.oneof(
    { maxDepth: 4, depthIdentifier: 'term' },
    fc.constantFrom<Term>(null, true, false, []),
    fc.integer(),
    fc.maxSafeInteger(),
    fc.bigInt({ min: -(2n ** 300n), max: 2n ** 300n }).filter((x) => x > BigInt(Number.MAX_SAFE_INTEGER) || x < BigInt(Number.MIN_SAFE_INTEGER)),
    fc.double({ noNaN: true, noDefaultInfinity: true }).map((x) => new ErlFloat(x)),
    fc.string({ unit: 'grapheme', maxLength: 20 }),
    fc.uint8Array({ minLength: 1, maxLength: 20 }).map((a) => Buffer.from(a)).filter((x) => !isUtf8(x)), // non-UTF-8 binaries stay Buffers
    fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 20 }).map((s) => Atom.of(`a_${s}`)),
    fc.tuple(fc.uint8Array({ minLength: 1, maxLength: 8 }), fc.integer({ min: 1, max: 8 })).map(([bytes, bits]) => new BitBinary(Buffer.from(bytes), bits)),
    fc.array(tie('term'), { maxLength: 5 }),
    fc.array(tie('term'), { maxLength: 5 }).map((xs) => new Tuple(xs)),
    fc.tuple(fc.array(tie('term'), { minLength: 1, maxLength: 3 }), fc.oneof(fc.integer(), fc.string({ maxLength: 3 }))).map(([xs, tail]) => new ImproperList(xs, tail)),
    fc.dictionary(fc.string({ maxLength: 8 }), tie('term'), { maxKeys: 5 }).map((d) => {
      const m = newMap();
      for (const k of Object.keys(d)) m[k] = d[k]!;
      return m;
    }),
    fc.array(fc.tuple(fc.integer(), tie('term')), { maxLength: 4 }).map((es) => new TermMap(uniqueBy(es, (e) => e[0]))),
  ),
})).term;

function uniqueBy<T, K>(xs: T[], key: (x: T) => K): T[] {
  const seen = new Set<K>();
  return xs.filter((x) => (seen.has(key(x)) ? false : (seen.add(key(x)), true)));
}

describe('properties', () => {
  it('encode → decode → encode is stable for every term of the mapping', () => {
    fc.assert(
      fc.property(termArb, (t) => {
        const once = encode(t);
        const twice = encode(decode(once));
        expect(twice.equals(once)).toBe(true);
      }),
      { numRuns: 3000, seed: 2026 },
    );
  });

  it('decode throws nothing but EtfError on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        try {
          decode(Buffer.concat([b(131), Buffer.from(bytes)]));
        } catch (err) {
          expect(err).toBeInstanceOf(EtfError);
        }
      }),
      { numRuns: 20_000, seed: 7 },
    );
  });
});

describe('seeded fuzz', () => {
  it('survives 100,000 random and mutated frames: only EtfError, never a hang', () => {
    const rnd = seededRandom(0xfeed);
    const seeds: Buffer[] = [];
    fc.assert(
      fc.property(termArb, (t) => {
        seeds.push(encode(t));
      }),
      { numRuns: 300, seed: 99 },
    );
    seeds.push(encode(new Tuple([atom('req'), 1, atom('optimize_prompt'), { prompt: 'x'.repeat(100), breadth: 10 } as unknown as Term])), encode('y'.repeat(5000), { compressAbove: 10 }));
    const pick = (n: number): number => Math.floor(rnd() * n);
    let decoded = 0;
    let rejected = 0;
    const t0 = performance.now();
    for (let i = 0; i < 100_000; i++) {
      const base = seeds[pick(seeds.length)]!;
      let buf: Buffer;
      switch (i % 5) {
        case 0: // random bytes after the version byte
          buf = Buffer.concat([b(131), Buffer.from(Array.from({ length: pick(40) }, () => pick(256)))]);
          break;
        case 1: // bit flips
          buf = Buffer.from(base);
          for (let k = 0; k <= pick(3); k++) {
            const at = pick(buf.length);
            buf[at] = buf[at]! ^ (1 << pick(8));
          }
          break;
        case 2: // truncation
          buf = base.subarray(0, pick(base.length + 1));
          break;
        case 3: {
          // inflate a length field: overwrite 4 bytes with a large count
          buf = Buffer.from(base);
          if (buf.length > 5) buf.writeUInt32BE(0x7fffffff - pick(1000), 1 + pick(buf.length - 4));
          break;
        }
        default: {
          // splice two encodings
          const other = seeds[pick(seeds.length)]!;
          buf = Buffer.concat([base.subarray(0, pick(base.length)), other.subarray(1 + pick(Math.max(1, other.length - 1)))]);
        }
      }
      try {
        decode(buf);
        decoded++;
      } catch (err) {
        if (!(err instanceof EtfError)) throw new Error(`non-EtfError on frame ${buf.toString('hex')}: ${String(err)}`);
        rejected++;
      }
    }
    expect(decoded + rejected).toBe(100_000);
    expect(rejected).toBeGreaterThan(50_000);
    expect(performance.now() - t0).toBeLessThan(30_000);
  });
});

describe('fuzz through the live sidecar', () => {
  it('takes 20,000 random and mutated frames without crashing or hanging, then answers health', async () => {
    const { PortClient } = await import('./helpers/portClient.js');
    const { mutatedFrame } = await import('./helpers/fuzz.js');
    const { record } = await import('../src/codec/terms.js');
    const c = new PortClient({ env: { LOG_LEVEL: 'silent' } });
    await c.ready;
    const rnd = seededRandom(0xbeef);
    const pick = (n: number): number => Math.floor(rnd() * n);
    const seeds = [
      encode(new Tuple([atom('req'), 1, atom('health'), newMap()])),
      encode(new Tuple([atom('cancel'), 5])),
      encode({ a: [1, 2.5, 'x'], b: new Tuple([atom('ok')]) } as unknown as Term),
      encode('z'.repeat(300), { compressAbove: 10 }),
    ];
    const chunks: Buffer[] = [];
    for (let i = 0; i < 20_000; i++) {
      chunks.push(mutatedFrame(seeds, i, pick));
      if (chunks.length === 500) c.sendRaw(Buffer.concat(chunks.splice(0)));
    }
    c.sendRaw(Buffer.concat(chunks));
    const health = await Promise.race([c.request('health', record({}), 9_999_999), new Promise((r) => setTimeout(() => r('hang'), 20_000))]);
    // Still serving (health's status depends on the database and NATS the test run shares, not on the frames sent).
    expect(health).toMatchObject({ ok: true, value: { status: expect.stringMatching(/^(ok|degraded)$/) } });
    expect(c.events.filter((e) => e.name === 'protocol_error').length).toBeGreaterThan(5_000);
    expect((await c.close()).code).toBe(0);
  });
});

describe('bounded caches and owned results', () => {
  it('decodes maps that leave a hot shape part way (at each key, with nested maps read before) exactly', () => {
    // After 32 maps of a shape the decoder reads its maps by a compiled reader that compares each
    // key's bytes in turn; a map whose keys then differ must keep every value the reader took.
    const rec = (fields: Record<string, Term>): Term => record(fields);
    const hot = (i: number): Term => rec({ alpha: `a${i}`, beta: rec({ x: i }), gamma: 'g'.repeat(40), delta: i });
    for (let i = 0; i < 64; i++) expect(encode(decode(encode(hot(i))))).toEqual(encode(hot(i)));
    const variants: Term[] = [
      rec({ omega: 1, beta: rec({ x: 1 }), gamma: 'g', delta: 2 }), // differs at the first key
      rec({ alpha: 'a', bet: rec({ x: 1 }), gamma: 'g', delta: 2 }), // at the second
      rec({ alpha: 'a', beta: rec({ x: 1 }), gamma: 'g', delta2: 2 }), // at the last, after a nested map
      rec({ alpha: 'a', beta: rec({ x: 1 }), gamma: 'g', alpha2: rec({ alpha: 1, beta: 2, gamma: 3, delta: 4 }) }), // a hot-sized map nested in a miss
      { alpha: 'a', beta: rec({ x: 1 }), gamma: 'g', delta: 2 } as unknown as Term, // the same names, as binaries
      new TermMap([[atom('alpha'), 1], [atom('beta'), 2], [atom('gamma'), 3], [7, 4]]), // a key that is not a name
      new TermMap([[atom('alpha'), 1], [atom('beta'), 2], [atom('gamma'), 3], ['alpha', 4]]), // an atom and a binary of one text
    ];
    for (let round = 0; round < 3; round++)
      for (const v of variants) {
        const bytes = encode(v);
        expect(encode(decode(bytes))).toEqual(bytes);
        expect(encode(decode(encode(hot(round))))).toEqual(encode(hot(round)));
      }
    // Cut short inside a hot map: still a truncation error at every point.
    const full = encode(hot(1));
    for (let cut = 1; cut < full.length; cut++) expectCode(full.subarray(0, cut), 'truncated');
  });

  it('leaves every encode result intact while later encodes reuse the buffer', () => {
    const kept: Array<[Buffer, string]> = [];
    for (let i = 0; i < 5000; i++) {
      const t = i % 50 === 0 ? newMap() : new Tuple([atom('ok'), i, { s: `v${i}`, n: i } as unknown as Term]);
      if (i % 50 === 0) (t as Record<string, Term>)['big'] = 'x'.repeat(1000 * (i % 200));
      const bytes = encode(t, i % 97 === 0 ? { compressAbove: 10 } : {});
      kept.push([bytes, Buffer.from(bytes).toString('hex')]);
    }
    for (const [bytes, hex] of kept) expect(bytes.toString('hex')).toBe(hex);
  });

  it('interns a bounded number of atoms from the wire, and decodes the same once its tables are full', () => {
    const smallAtom = (name: string): number[] => [119, name.length, ...Buffer.from(name)];
    const frame = (value: string, key: string): Buffer =>
      Buffer.from([131, 104, 2, ...smallAtom(value), 116, 0, 0, 0, 1, ...smallAtom(key), 109, 0, 0, 0, 1, 120]);
    // Far more distinct atom values and map shapes than any cache holds.
    for (let i = 0; i < Atom.MAX_WIRE_ATOMS + 5000; i++) {
      const t = decode(frame(`flood_${i}`, `key_${i}`)) as Tuple;
      expect((t.items[0] as Atom).name).toBe(`flood_${i}`);
      expect(Object.keys(t.items[1] as object)).toEqual([`key_${i}`]);
    }
    // Past the bound a new name is not interned: two decodes give two instances of it (a name
    // longer than the decoder's own short-name table, which would hand back its last instance).
    const long = `never_seen_before_${'x'.repeat(80)}`;
    const a = (decode(frame(long, 'k')) as Tuple).items[0] as Atom;
    const b = (decode(frame(long, 'k')) as Tuple).items[0] as Atom;
    expect(a.name).toBe(long);
    expect(a).not.toBe(b);
    // Names our code uses stay interned, and records keep their atom keys through it all.
    expect((decode(frame('ok', 'k')) as Tuple).items[0]).toBe(atom('ok'));
    const rec = encode(new Tuple([atom('req'), 7, atom('echo'), { a: 1 } as unknown as Term]));
    expect(encode(decode(rec)).equals(rec)).toBe(true);
  });
});
