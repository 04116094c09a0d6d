/**
 * The codec against real Erlang: a corpus produced by `erl`
 * (test/erlang/etf_corpus.erl, 500+ encodings covering every tag) is
 * decoded, re-encoded, and compared both ways — `=:=` in erl for every
 * term, and byte equality with `term_to_binary(T, [{minor_version, 2}])`
 * where Erlang's encoding is canonical. Then terms built in TypeScript are
 * decoded by erl and compared with the Erlang value they must be.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { decode, encode } from '../src/codec/etf.js';
import { Atom, BitBinary, ErlFloat, ImproperList, Opaque, TermMap, Tuple, atom, atomKeysOf, float, isTermObject, markAtomKeys, newMap, record, tuple, type Term, type TermObject } from '../src/codec/terms.js';
import { erlangEbin } from './helpers/erlang.js';
import { expectInheritsNothing } from './helpers/maps.js';

interface CorpusEntry {
  canonical: boolean;
  minor2: Buffer;
  other: Buffer;
}

let corpus: CorpusEntry[] = [];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-codec-'));

function erl(args: string[]): string {
  return execFileSync('erl', ['-noshell', '-pa', erlangEbin(), '-eval', `etf_corpus:main(${JSON.stringify(args)})`], { maxBuffer: 256 * 1024 * 1024 }).toString();
}

beforeAll(() => {
  corpus = erl(['gen'])
    .split('\n')
    .filter((l) => l.startsWith('term '))
    .map((l) => {
      const [, c, a, b] = l.split(' ');
      return { canonical: c === '1', minor2: Buffer.from(a!, 'hex'), other: Buffer.from(b!, 'hex') };
    });
});

/** Which tags (type bytes) occur anywhere in an encoding: a coverage check on the corpus. */
function tagsOf(t: Term, into = new Set<string>()): Set<string> {
  if (t === null || typeof t === 'boolean') into.add('atom');
  else if (typeof t === 'number') into.add(Number.isInteger(t) ? (t >= 0 && t <= 255 ? 'small_int' : Math.abs(t) < 2 ** 31 ? 'int' : 'big') : 'float');
  else if (typeof t === 'bigint') into.add('bigint');
  else if (typeof t === 'string') into.add('binary');
  else if (Buffer.isBuffer(t)) into.add('raw_binary');
  else if (t instanceof Atom) into.add('atom');
  else if (t instanceof ErlFloat) into.add('float');
  else if (t instanceof BitBinary) into.add('bit_binary');
  else if (t instanceof Opaque) into.add(t.kind);
  else if (t instanceof Tuple) {
    into.add(t.items.length > 255 ? 'large_tuple' : 'tuple');
    t.items.forEach((x) => tagsOf(x, into));
  } else if (t instanceof ImproperList) {
    into.add('improper_list');
    [...t.items, t.tail].forEach((x) => tagsOf(x, into));
  } else if (t instanceof TermMap) {
    into.add('term_map');
    t.entries.forEach(([k, v]) => (tagsOf(k, into), tagsOf(v, into)));
  } else if (Array.isArray(t)) {
    into.add(t.length === 0 ? 'nil' : 'list');
    t.forEach((x) => tagsOf(x, into));
  } else {
    into.add('map');
    Object.values(t).forEach((x) => tagsOf(x, into));
  }
  return into;
}

describe('ETF codec against real Erlang', () => {
  it('has a corpus of at least 300 terms covering every term type', () => {
    expect(corpus.length).toBeGreaterThanOrEqual(300);
    const tags = new Set<string>();
    for (const e of corpus) tagsOf(decode(e.minor2), tags);
    for (const want of ['atom', 'small_int', 'int', 'big', 'bigint', 'float', 'binary', 'raw_binary', 'bit_binary', 'pid', 'port', 'reference', 'tuple', 'large_tuple', 'improper_list', 'term_map', 'list', 'nil', 'map'])
      expect(tags, want).toContain(want);
    // and every wire tag: OTP 25 default atoms (100), minor 0 floats (99), compressed (80)
    const firstTags = new Set(corpus.map((e) => e.other[1]));
    expect(firstTags).toContain(80);
    expect(corpus.some((e) => e.other.includes(100))).toBe(true);
    expect(corpus.some((e) => e.other[1] === 99)).toBe(true);
  });

  it('re-encodes every canonical term to the exact bytes of term_to_binary(T, [{minor_version, 2}])', () => {
    const canonical = corpus.filter((e) => e.canonical);
    expect(canonical.length).toBeGreaterThan(250);
    const mismatches = canonical.filter((e) => !encode(decode(e.minor2)).equals(e.minor2)).map((e) => e.minor2.toString('hex').slice(0, 80));
    expect(mismatches).toEqual([]);
  });

  it('re-encodes every canonical term exactly once its map shapes are built by compiled builders too', () => {
    // The decoder compiles a builder for a map shape after it has seen 32 maps of it; the
    // shape's atom keys then ride on the maps' shared prototype instead of a stamp on each.
    const canonical = corpus.filter((e) => e.canonical);
    for (let round = 0; round < 40; round++) {
      const mismatches = canonical.filter((e) => !encode(decode(e.minor2)).equals(e.minor2)).map((e) => e.minor2.toString('hex').slice(0, 80));
      expect(mismatches).toEqual([]);
    }
    // A set marked on a built map itself takes precedence over its shape's.
    const built = canonical
      .map((e) => decode(e.minor2))
      .find((t): t is TermObject => isTermObject(t) && Object.keys(t).length > 0 && (atomKeysOf(t)?.size ?? 0) === Object.keys(t).length)!;
    expect(built).toBeDefined();
    expectInheritsNothing(built);
    const keys = Object.keys(built);
    built['added_later'] = 1;
    markAtomKeys(built, ['added_later']);
    expect([...atomKeysOf(built)!].sort()).toEqual([...keys, 'added_later'].sort());
    const again = decode(encode(built)) as TermObject;
    expect([...atomKeysOf(again)!].sort()).toEqual([...keys, 'added_later'].sort());
  });

  it('round-trips every encoding (default, minor 0, compressed, large maps) to a term erl finds =:= to the original', () => {
    const lines: string[] = [];
    for (const e of corpus) {
      lines.push(`${e.minor2.toString('hex')} ${encode(decode(e.minor2)).toString('hex')}`);
      lines.push(`${e.other.toString('hex')} ${encode(decode(e.other)).toString('hex')}`);
    }
    const file = path.join(tmp, 'pairs.txt');
    fs.writeFileSync(file, lines.join('\n'));
    const results = erl(['check', file])
      .split('\n')
      .filter((l) => l.startsWith('eq '));
    expect(results).toHaveLength(lines.length);
    const bad = results.map((r, i) => (r === 'eq 1' ? -1 : i)).filter((i) => i >= 0);
    expect(bad.map((i) => lines[i]!.slice(0, 100))).toEqual([]);
  });

  it('encodes TypeScript values as the Erlang terms the contract says', () => {
    const userMap = newMap();
    userMap['language'] = 'rust';
    userMap['__proto__'] = 'kept as a key';
    const cases: Array<[Term, string]> = [
      ['héllo', '<<"héllo"/utf8>>'],
      [Buffer.from([255, 0]), '<<255,0>>'],
      [float(1), '1.0'],
      [float(0), '0.0'],
      [float(-0), '-0.0'],
      [0.25, '0.25'],
      [42, '42'],
      [-2147483649, '-2147483649'],
      [2n ** 64n + 1n, '18446744073709551617'],
      [-(2n ** 100n), '-1267650600228229401496703205376'],
      [Number.MAX_SAFE_INTEGER, '9007199254740991'],
      [true, 'true'],
      [null, 'nil'],
      [atom('ok'), 'ok'],
      [atom('Ünïcødé'), "'Ünïcødé'"],
      [tuple(atom('ok'), 1), '{ok, 1}'],
      [[1, 2, 300], '[1, 2, 300]'],
      [[104, 105], '"hi"'],
      [[], '[]'],
      [new ImproperList([1], atom('t')), '[1 | t]'],
      [record({ prompt: 'p', score: float(0.5), n: 3 }), '#{prompt => <<"p">>, score => 0.5, n => 3}'],
      [record({ metadata: userMap }), '#{metadata => #{<<"language">> => <<"rust">>, <<"__proto__">> => <<"kept as a key">>}}'],
      [new TermMap([[1, atom('one')], [tuple(atom('k')), 'v']]), '#{1 => one, {k} => <<"v">>}'],
      [new BitBinary(Buffer.from([0xa0]), 3), '<<5:3>>'],
    ];
    const file = path.join(tmp, 'expect.txt');
    fs.writeFileSync(file, cases.map(([t, e]) => `${encode(t).toString('hex')} ${e}`).join('\n'));
    const out = erl(['expect', file])
      .split('\n')
      .filter((l) => l.startsWith('eq '));
    expect(out).toHaveLength(cases.length);
    const bad = out.map((l, i) => (l.startsWith('eq 1') ? undefined : `${cases[i]![1]} ≠ ${l}`)).filter(Boolean);
    expect(bad).toEqual([]);
  });

  it('decodes a user map with a __proto__ key as an own key of a map that inherits nothing', () => {
    const withProto = corpus.map((c) => decode(c.minor2)).filter((t) => t !== null && typeof t === 'object' && !(t instanceof TermMap) && Object.prototype.hasOwnProperty.call(t, '__proto__'));
    expect(withProto.length).toBeGreaterThan(0);
    for (const m of withProto) {
      expectInheritsNothing(m as object);
      expect(Object.keys(m as object)).toContain('__proto__');
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    // an atom key and a binary key with the same text stay two distinct keys
    const both = corpus.map((c) => decode(c.minor2)).find((t) => t instanceof TermMap && t.entries.some(([k]) => k instanceof Atom && k.name === '__proto__'));
    expect(both).toBeInstanceOf(TermMap);
    expect((both as TermMap).entries).toHaveLength(2);
  });
});
