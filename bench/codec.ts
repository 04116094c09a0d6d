/**
 * Codec throughput on realistic payloads — an optimize request, a batch of
 * 100 tracking entries, a 1 MB template — for our ETF codec, erlang_js
 * (npm; for comparison only: it encodes strings as Latin-1 charlists and
 * 2-element arrays as tuples, so its output is not what Elixir expects),
 * and JSON.parse/JSON.stringify of the same data, in the same run.
 *
 * Each round times every (payload, codec, direction) for ROUND_MS after a
 * short warm-up, the six of a payload one after the other; a figure is the
 * best of ROUNDS rounds, so that a round slowed by another process on the
 * machine does not count. Ratios are between figures of this one run.
 * With `--cpu`, ops are counted per second of this process's CPU time
 * (user + system, all threads, so GC helpers count) instead of wall time:
 * steadier when other jobs share the cores.
 *
 * Then our decoder alone with its fast paths switched off one at a time
 * (`configureDecoder`: the string tables, the generated builders and
 * readers, the map shapes altogether) and all at once, in rounds of their
 * own: what each is worth, as a ratio to all on within the same run.
 *   npm run build && node dist/bench/codec.js [rounds] [--cpu]
 */
import { createRequire } from 'node:module';
import { decode, encode } from '../src/codec/etf.js';
import { configureDecoder, type DecoderFastPaths } from '../src/codec/decode.js';
import { ErlFloat, Tuple, atom, float, mapPrototypeWithAtomKeys, record, tuple, type Term, type TermObject } from '../src/codec/terms.js';

const require = createRequire(import.meta.url);
interface ErlangJs {
  term_to_binary(t: unknown, cb: (err: unknown, bin: Buffer) => void): void;
  binary_to_term(b: Buffer, cb: (err: unknown, t: unknown) => void): void;
}
const { Erlang } = require('erlang_js') as { Erlang: ErlangJs };
const progress = (m: string): void => void process.stderr.write(`[bench:codec] ${m}\n`);

const args = process.argv.slice(2);
const CPU = args.includes('--cpu');
const ROUNDS = Number(args.find((a) => /^\d+$/.test(a)) ?? 7);
const ROUND_MS = 150;

const words = 'the quick brown fox jumps over the lazy dog while the engine optimizes a prompt for elixir services'.split(' ');
const text = (n: number, seed: number): string => Array.from({ length: n }, (_, i) => words[(i * 7 + seed) % words.length]).join(' ');

// The same data in two shapes: terms (atoms, floats) for our codec, plain JS for JSON and erlang_js.
/** `variant` > 0: every string of at most 32 bytes made unique to this variant (so no string table can have seen it). */
function optimizeRequest(asTerm: boolean, variant = 0): Term | object {
  const f = (x: number) => (asTerm ? float(x) : x);
  const v = (s: string): string => (variant === 0 ? s : `${s}~${variant}`);
  const devset = Array.from({ length: 20 }, (_, i) => (asTerm ? record({ input: text(30, i), output: v(text(3, i)) }) : { input: text(30, i), output: v(text(3, i)) }));
  const args = { prompt: text(300, 1), context: { language: v('elixir'), framework: v('phoenix'), domain: v('billing') }, breadth: 10, depth: 3, temperature: f(1.4), devset };
  return asTerm ? tuple(atom('req'), 42, atom('optimize_prompt'), record(args as unknown as Record<string, Term>)) : { req: 42, op: 'optimize_prompt', args };
}
function trackingBatch(asTerm: boolean): Term | object {
  return Array.from({ length: 100 }, (_, i) => {
    const e = {
      id: `0b8e7c1e-5f0e-4c1b-9a7e-${String(100000000000 + i)}`,
      prompt_id: `p_${i % 17}`,
      execution_time_ms: 120 + i,
      success: i % 3 !== 0,
      confidence_score: asTerm ? float(0.5 + (i % 50) / 100) : 0.5 + (i % 50) / 100,
      context_signature: `sig_${i % 5}`,
      response_length: 800 + i,
      timestamp: '2026-11-24T12:00:00.000Z',
      metadata: { model: 'vicuna-13b', task: 'sports_understanding', method: 'rephrase' },
    };
    return asTerm ? record(e as unknown as Record<string, Term>) : e;
  });
}
function bigTemplate(asTerm: boolean): Term | object {
  const t = { template_name: 'big', template_type: 'system', language: 'any', template_content: text(190_000, 3).slice(0, 1_000_000) };
  return asTerm ? record(t) : t;
}

function opsPerSec(f: () => void, ms: number): number {
  for (let i = 0; i < 3; i++) f();
  let n = 0;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  let t = t0;
  while (t - t0 < ms) {
    f();
    n++;
    if ((n & 3) === 0) t = performance.now();
  }
  t = performance.now();
  if (!CPU) return n / ((t - t0) / 1000);
  const c = process.cpuUsage(c0);
  return n / ((c.user + c.system) / 1e6);
}

type Col = 'ours' | 'erlang_js' | 'json';
interface Row {
  name: string;
  etfBytes: number;
  dec: Record<Col, number>;
  enc: Record<Col, number>;
  /** Only making the payload's strings of over 16 bytes, by Node's native UTF-8 slicer: the floor under any JS decoder. */
  strings: number;
  /** Making the whole decoded term with nothing read from the wire (optimize request only; 0 = not measured). */
  built: number;
}

/**
 * What any decoder must at least do to hand back the optimize request as
 * the term mapping says, with nothing read from the wire: its 21 long
 * strings by the native slicer, its 22 maps made the cheapest way we know
 * (a constructor per shape whose prototype carries the atom keys, as our
 * decoder's builders do), the devset list, the tuple and the float. A
 * decoder has what is left of its time budget for everything else: reading
 * tags and lengths, matching keys, checking bounds.
 */
function optimizeBuiltOnly(etf: Buffer, decoded: Tuple): () => Term {
  const args = decoded.items[3] as TermObject;
  const devset = args.devset as TermObject[];
  const span = (v: Term): [number, number] => {
    const b = Buffer.from(v as string);
    const i = etf.indexOf(b);
    return [i, i + b.length];
  };
  const prompt = span(args.prompt!);
  const inputs = devset.map((d) => span(d.input!));
  const outputs = devset.map((d) => d.output as string);
  const slicer = etf as unknown as { utf8Slice(a: number, b: number): string };
  const shape = <A extends unknown[]>(keys: string[], fill: (o: Record<string, unknown>, ...a: A) => void): new (...a: A) => TermObject => {
    const C = function (this: Record<string, unknown>, ...a: A) {
      fill(this, ...a);
    } as unknown as new (...a: A) => TermObject;
    (C as unknown as { prototype: object }).prototype = mapPrototypeWithAtomKeys(new Set(keys));
    return C;
  };
  const Item = shape(['input', 'output'], (o, i: string, out: string) => ((o.input = i), (o.output = out)));
  const Context = shape(['domain', 'framework', 'language'], (o) => ((o.domain = 'billing'), (o.framework = 'phoenix'), (o.language = 'elixir')));
  const Args = shape(['breadth', 'context', 'depth', 'devset', 'prompt', 'temperature'], (o, c: TermObject, dv: TermObject[], p: string, t: ErlFloat) => {
    o.breadth = 10;
    o.context = c;
    o.depth = 3;
    o.devset = dv;
    o.prompt = p;
    o.temperature = t;
  });
  const [req, op] = [decoded.items[0]!, decoded.items[2]!];
  return () => {
    const dv = new Array<TermObject>(inputs.length);
    for (let i = 0; i < inputs.length; i++) dv[i] = new Item(slicer.utf8Slice(inputs[i]![0], inputs[i]![1]), outputs[i]!);
    return new Tuple([req, 42, op, new Args(new Context(), dv, slicer.utf8Slice(prompt[0], prompt[1]), new ErlFloat(1.4))]);
  };
}

/** [start, end) of every binary of over 16 bytes in `etf` (tag 109, 4-byte length): what the decoder hands to the native slicer. */
function longBinaries(etf: Buffer, t: Term): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  const walk = (v: unknown): void => {
    if (typeof v === 'string') {
      const b = Buffer.from(v);
      if (b.length <= 16) return;
      const header = Buffer.concat([Buffer.from([109, b.length >>> 24, (b.length >>> 16) & 255, (b.length >>> 8) & 255, b.length & 255]), b]);
      const i = etf.indexOf(header);
      if (i >= 0) out.push([i + 5, i + 5 + b.length]);
    } else if (Array.isArray(v)) v.forEach(walk);
    else if (v !== null && typeof v === 'object') Object.values(v).forEach(walk);
  };
  walk(t);
  return out;
}

const rows: Row[] = [];
const cases: Array<{ row: Row; runs: Array<['dec' | 'enc' | 'strings' | 'built', Col, () => void]> }> = [];
for (const [name, make] of [
  ['optimize request', optimizeRequest],
  ['100 tracking entries', trackingBatch],
  ['1 MB template', bigTemplate],
] as const) {
  const term = make(true) as Term;
  const plain = make(false);
  const etf = encode(term);
  const json = JSON.stringify(plain);
  let ejs: Buffer = Buffer.alloc(0);
  Erlang.term_to_binary(plain, (err, bin) => {
    if (err) throw err;
    ejs = bin;
  });
  const row: Row = { name, etfBytes: etf.length, dec: { ours: 0, erlang_js: 0, json: 0 }, enc: { ours: 0, erlang_js: 0, json: 0 }, strings: 0, built: 0 };
  const spans = longBinaries(etf, term);
  const slicer = etf as unknown as { utf8Slice(a: number, b: number): string };
  rows.push(row);
  cases.push({
    row,
    runs: [
      ['dec', 'ours', () => decode(etf)],
      ['dec', 'erlang_js', () => Erlang.binary_to_term(ejs, () => undefined)],
      ['dec', 'json', () => JSON.parse(json)],
      ['strings', 'ours', () => {
        for (const [a, b] of spans) slicer.utf8Slice(a, b);
      }],
      ...(name === 'optimize request' ? [['built', 'ours', optimizeBuiltOnly(etf, decode(etf) as Tuple)] as ['built', Col, () => void]] : []),
      ['enc', 'ours', () => encode(term)],
      ['enc', 'erlang_js', () => Erlang.term_to_binary(plain, () => undefined)],
      ['enc', 'json', () => JSON.stringify(plain)],
    ],
  });
}

// The optimize request again, cycling through VARIANTS copies whose short strings (devset outputs,
// context values: 23 of ≤ 32 bytes each) are new to every copy — 94,208 distinct strings against
// string tables of 4,096 + 2,048 slots — for all three decoders: the figure when nothing repeats.
{
  const VARIANTS = 4096;
  const terms = Array.from({ length: VARIANTS }, (_, i) => optimizeRequest(true, i + 1) as Term);
  const plains = Array.from({ length: VARIANTS }, (_, i) => optimizeRequest(false, i + 1));
  const etfs = terms.map((t) => encode(t)).map((b) => Buffer.from(b));
  const jsons = plains.map((p) => JSON.stringify(p));
  const ejss = plains.map((p) => {
    let out: Buffer = Buffer.alloc(0);
    Erlang.term_to_binary(p, (err, bin) => {
      if (err) throw err;
      out = bin;
    });
    return out;
  });
  let k = 0;
  const next = (): number => (k = (k + 1) & (VARIANTS - 1));
  const row: Row = { name: 'optimize request, short strings new each time', etfBytes: etfs[0]!.length, dec: { ours: 0, erlang_js: 0, json: 0 }, enc: { ours: 0, erlang_js: 0, json: 0 }, strings: 0, built: 0 };
  rows.push(row);
  cases.push({
    row,
    runs: [
      ['dec', 'ours', () => decode(etfs[next()]!)],
      ['dec', 'erlang_js', () => Erlang.binary_to_term(ejss[next()]!, () => undefined)],
      ['dec', 'json', () => JSON.parse(jsons[next()]!)],
      ['enc', 'ours', () => encode(terms[next()]!)],
      ['enc', 'erlang_js', () => Erlang.term_to_binary(plains[next()]!, () => undefined)],
      ['enc', 'json', () => JSON.stringify(plains[next()]!)],
    ],
  });
}

for (let r = 1; r <= ROUNDS; r++) {
  progress(`round ${r}/${ROUNDS}`);
  for (const { row, runs } of cases)
    for (const [dir, col, f] of runs) {
      // The 1 MB payload runs a few hundred times a second at most: give it longer rounds.
      const v = opsPerSec(f, row.etfBytes > 100_000 ? 3 * ROUND_MS : ROUND_MS);
      if (dir === 'strings') row.strings = Math.max(row.strings, v);
      else if (dir === 'built') row.built = Math.max(row.built, v);
      else if (v > row[dir][col]) row[dir][col] = v;
    }
}

// Our decoder with its fast paths on and off, in rounds of their own (switching forgets every shape, so
// each measurement starts cold and warms up as decoding goes).
const PATHS: Array<[string, DecoderFastPaths]> = [
  ['all on', { stringTables: true, shapes: true, codegen: true }],
  ['no string tables', { stringTables: false, shapes: true, codegen: true }],
  ['no generated builders/readers', { stringTables: true, shapes: true, codegen: false }],
  ['no map shapes', { stringTables: true, shapes: false, codegen: false }],
  ['all off', { stringTables: false, shapes: false, codegen: false }],
];
const pathRows = cases.filter((c) => c.row.etfBytes < 100_000).map((c) => ({ name: c.row.name, decode: c.runs.find(([dir, col]) => dir === 'dec' && col === 'ours')![2], best: PATHS.map(() => 0) }));
for (let r = 1; r <= ROUNDS; r++) {
  progress(`fast paths round ${r}/${ROUNDS}`);
  PATHS.forEach(([, paths], i) => {
    configureDecoder(paths);
    for (const row of pathRows) {
      for (let w = 0; w < 50; w++) row.decode(); // shapes and builders back before timing
      row.best[i] = Math.max(row.best[i]!, opsPerSec(row.decode, ROUND_MS));
    }
  });
}
configureDecoder(PATHS[0]![1]);

const f = (x: number): string => (x >= 100 ? Math.round(x).toLocaleString('en-US') : x.toFixed(1));
const x = (a: number, b: number): string => `${(a / b).toFixed(2)}×`;
const table = (dir: 'dec' | 'enc', jsonName: string): string[] => [
  `| payload | ETF size | ours ops/s | erlang_js ops/s | ${jsonName} ops/s | ours ÷ erlang_js | ours ÷ ${jsonName} |`,
  '|---|---:|---:|---:|---:|---:|---:|',
  ...rows.map((r) => `| ${r.name} | ${(r.etfBytes / 1024).toFixed(1)} KiB | ${f(r[dir].ours)} | ${f(r[dir].erlang_js)} | ${f(r[dir].json)} | ${x(r[dir].ours, r[dir].erlang_js)} | ${x(r[dir].ours, r[dir].json)} |`),
];
process.stdout.write(
  [
    `Decode (ops per ${CPU ? 'CPU' : 'wall-clock'} second, best of ${ROUNDS} rounds)`,
    '',
    ...table('dec', 'JSON.parse'),
    '',
    'The floor under any decoder written in JS: only making the payload\'s strings of over 16 bytes with Node\'s native UTF-8 slicer (what ours does for them), nothing else. Decoding at 3× erlang_js leaves this budget per payload:',
    '',
    '| payload | strings only, ops/s | µs per payload | 3× erlang_js: µs per payload | strings ÷ that budget |',
    '|---|---:|---:|---:|---:|',
    ...rows.filter((r) => r.strings > 0).map((r) => `| ${r.name} | ${f(r.strings)} | ${(1e6 / r.strings).toFixed(2)} | ${(1e6 / (3 * r.dec.erlang_js)).toFixed(2)} | ${((100 * (1e6 / r.strings)) / (1e6 / (3 * r.dec.erlang_js))).toFixed(0)}% |`),
    '',
    'And the whole optimize request made with nothing read from the wire (its strings, 22 maps with their atom keys, the list, the tuple, the float; the cheapest construction we know), beside ours:',
    '',
    '| payload | made only, µs | ours, µs | ours − made (reading the wire) | 3× erlang_js: µs | left for reading the wire |',
    '|---|---:|---:|---:|---:|---:|',
    ...rows
      .filter((r) => r.built > 0)
      .map((r) => {
        const made = 1e6 / r.built;
        const ours = 1e6 / r.dec.ours;
        const budget = 1e6 / (3 * r.dec.erlang_js);
        return `| ${r.name} | ${made.toFixed(2)} | ${ours.toFixed(2)} | ${(ours - made).toFixed(2)} | ${budget.toFixed(2)} | ${(budget - made).toFixed(2)} |`;
      }),
    '',
    `Encode (ops per ${CPU ? 'CPU' : 'wall-clock'} second, best of ${ROUNDS} rounds)`,
    '',
    ...table('enc', 'JSON.stringify'),
    '',
    `Our decoder with its fast paths switched off (decode ops per ${CPU ? 'CPU' : 'wall-clock'} second, best of ${ROUNDS} rounds; ratio to all on)`,
    '',
    `| payload | ${PATHS.map(([name]) => name).join(' | ')} |`,
    `|---|${PATHS.map(() => '---:').join('|')}|`,
    ...pathRows.map((r) => `| ${r.name} | ${r.best.map((v, i) => (i === 0 ? f(v) : `${f(v)} (${x(v, r.best[0]!)})`)).join(' | ')} |`),
  ].join('\n') + '\n',
);
