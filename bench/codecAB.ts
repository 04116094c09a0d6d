/**
 * A/B of two builds of the ETF decoder in one process: this checkout's and
 * another's (a `dist/src/codec/decode.js` built from another commit), on
 * the payloads of bench/codec.ts, rounds interleaved (A then B, B then A)
 * and each figure the best of its rounds in ops per second of this
 * process's CPU time — so a machine busy with other jobs weighs on both
 * sides alike. For "behaviour and speed unchanged" after a refactor:
 *   git archive <commit> | tar -x -C /tmp/before && ln -s $PWD/node_modules /tmp/before/ && (cd /tmp/before && npx tsc -p tsconfig.json)
 *   npm run build && node dist/bench/codecAB.js /tmp/before/dist/src/codec/decode.js [rounds]
 */
import { decode as ours } from '../src/codec/decode.js';
import { encode } from '../src/codec/encode.js';
import { atom, float, record, tuple, type Term } from '../src/codec/terms.js';

type Decode = (b: Buffer) => Term;
const otherPath = process.argv[2];
if (otherPath === undefined) throw new Error('usage: node dist/bench/codecAB.js <other build>/dist/src/codec/decode.js [rounds]');
const other = ((await import(otherPath)) as { decode: Decode }).decode;
const ROUNDS = Number(process.argv[3] ?? 15);

const words = 'the quick brown fox jumps over the lazy dog while the engine optimizes a prompt for elixir services'.split(' ');
const text = (n: number, seed: number): string => Array.from({ length: n }, (_, i) => words[(i * 7 + seed) % words.length]).join(' ');
/** As bench/codec.ts: `variant` > 0 makes every short string new to that variant. */
function optimizeRequest(variant = 0): Term {
  const v = (s: string): string => (variant === 0 ? s : `${s}~${variant}`);
  const devset = Array.from({ length: 20 }, (_, i) => record({ input: text(30, i), output: v(text(3, i)) }));
  return tuple(atom('req'), 42, atom('optimize_prompt'), record({ prompt: text(300, 1), context: record({ language: v('elixir'), framework: v('phoenix'), domain: v('billing') }), breadth: 10, depth: 3, temperature: float(1.4), devset }));
}
const tracking: Term = Array.from({ length: 100 }, (_, i) =>
  record({
    id: `0b8e7c1e-5f0e-4c1b-9a7e-${String(100000000000 + i)}`,
    prompt_id: `p_${i % 17}`,
    execution_time_ms: 120 + i,
    success: i % 3 !== 0,
    confidence_score: float(0.5 + (i % 50) / 100),
    context_signature: `sig_${i % 5}`,
    response_length: 800 + i,
    timestamp: '2026-11-24T12:00:00.000Z',
    metadata: record({ model: 'vicuna-13b', task: 'sports_understanding', method: 'rephrase' }),
  }),
);
const optimize = Buffer.from(encode(optimizeRequest()));
const batch = Buffer.from(encode(tracking));
const variants = Array.from({ length: 4096 }, (_, i) => Buffer.from(encode(optimizeRequest(i + 1))));
let k = 0;
const cases: Array<[string, (d: Decode) => unknown]> = [
  ['optimize request', (d) => d(optimize)],
  ['100 tracking entries', (d) => d(batch)],
  ['optimize request, short strings new each time', (d) => d(variants[(k = (k + 1) & 4095)]!)],
];

function opsPerCpuSecond(f: () => unknown, ms: number): number {
  for (let i = 0; i < 20; i++) f();
  let n = 0;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  while (performance.now() - t0 < ms) {
    f();
    n++;
  }
  const c = process.cpuUsage(c0);
  return n / ((c.user + c.system) / 1e6);
}

const best = cases.map(() => ({ other: 0, ours: 0 }));
for (let r = 0; r < ROUNDS; r++) {
  process.stderr.write(`[bench:codecAB] round ${r + 1}/${ROUNDS}\n`);
  cases.forEach(([, run], i) => {
    const order: Array<'other' | 'ours'> = r % 2 === 0 ? ['other', 'ours'] : ['ours', 'other'];
    for (const side of order) best[i]![side] = Math.max(best[i]![side], opsPerCpuSecond(() => run(side === 'ours' ? ours : other), 150));
  });
}
process.stdout.write(
  [
    `Decode, ops per CPU second, best of ${ROUNDS} interleaved rounds`,
    '',
    '| payload | other build | this build | this ÷ other |',
    '|---|---:|---:|---:|',
    ...cases.map(([name], i) => `| ${name} | ${Math.round(best[i]!.other).toLocaleString('en-US')} | ${Math.round(best[i]!.ours).toLocaleString('en-US')} | ${(best[i]!.ours / best[i]!.other).toFixed(2)}× |`),
  ].join('\n') + '\n',
);
