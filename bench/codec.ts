/**
 * Codec throughput on realistic payloads — an optimize request, a batch of
 * 100 tracking entries, a 1 MB template — for our ETF codec, erlang_js
 * (npm; for comparison only: it encodes strings as Latin-1 charlists and
 * 2-element arrays as tuples, so its output is not what Elixir expects),
 * and JSON.stringify/parse of the same data, in the same run.
 *   npm run build && node dist/bench/codec.js
 */
import { createRequire } from 'node:module';
import { decode, encode } from '../src/codec/etf.js';
import { atom, float, record, tuple, type Term } from '../src/codec/terms.js';

const require = createRequire(import.meta.url);
interface ErlangJs {
  term_to_binary(t: unknown, cb: (err: unknown, bin: Buffer) => void): void;
  binary_to_term(b: Buffer, cb: (err: unknown, t: unknown) => void): void;
}
const { Erlang } = require('erlang_js') as { Erlang: ErlangJs };
const progress = (m: string): void => void process.stderr.write(`[bench:codec] ${m}\n`);

const words = 'the quick brown fox jumps over the lazy dog while the engine optimizes a prompt for elixir services'.split(' ');
const text = (n: number, seed: number): string => Array.from({ length: n }, (_, i) => words[(i * 7 + seed) % words.length]).join(' ');

// The same data in two shapes: terms (atoms, floats) for our codec, plain JS for JSON and erlang_js.
function optimizeRequest(asTerm: boolean): Term | object {
  const f = (x: number) => (asTerm ? float(x) : x);
  const devset = Array.from({ length: 20 }, (_, i) => (asTerm ? record({ input: text(30, i), output: text(3, i) }) : { input: text(30, i), output: text(3, i) }));
  const args = { prompt: text(300, 1), context: { language: 'elixir', framework: 'phoenix', domain: 'billing' }, breadth: 10, depth: 3, temperature: f(1.4), devset };
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

function opsPerSec(f: () => void, minMs = 400): number {
  for (let i = 0; i < 3; i++) f();
  let n = 0;
  const t0 = performance.now();
  let t = t0;
  while (t - t0 < minMs) {
    f();
    n++;
    if ((n & 7) === 0) t = performance.now();
  }
  t = performance.now();
  return n / ((t - t0) / 1000);
}

const rows: string[] = [];
for (const [name, make] of [
  ['optimize request', optimizeRequest],
  ['100 tracking entries', trackingBatch],
  ['1 MB template', bigTemplate],
] as const) {
  progress(name);
  const term = make(true) as Term;
  const plain = make(false);
  const etf = encode(term);
  const json = JSON.stringify(plain);
  let ejs: Buffer = Buffer.alloc(0);
  Erlang.term_to_binary(plain, (err, bin) => {
    if (err) throw err;
    ejs = bin;
  });
  const enc = opsPerSec(() => encode(term));
  const dec = opsPerSec(() => decode(etf));
  const jEnc = opsPerSec(() => JSON.stringify(plain));
  const jDec = opsPerSec(() => JSON.parse(json));
  const eEnc = opsPerSec(() => Erlang.term_to_binary(plain, () => undefined));
  const eDec = opsPerSec(() => Erlang.binary_to_term(ejs, () => undefined));
  const f = (x: number): string => (x >= 100 ? Math.round(x).toLocaleString('en-US') : x.toFixed(1));
  rows.push(
    `| ${name} | ${(etf.length / 1024).toFixed(1)} KiB | ${f(enc)} / ${f(dec)} | ${f(eEnc)} / ${f(eDec)} | ${f(jEnc)} / ${f(jDec)} | ${(enc / eEnc).toFixed(2)}× / ${(dec / eDec).toFixed(2)}× | ${(enc / jEnc).toFixed(2)}× / ${(dec / jDec).toFixed(2)}× |`,
  );
}
process.stdout.write(
  [
    '| payload | ETF size | ours enc/dec ops/s | erlang_js enc/dec ops/s | JSON stringify/parse ops/s | ours ÷ erlang_js | ours ÷ JSON |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...rows,
  ].join('\n') + '\n',
);
