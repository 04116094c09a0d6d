/**
 * generate_prompt through the Port with a warm registry: p50/p99 of one
 * request at a time and pipelined requests/s, beside `echo` through the same
 * sidecar in the same run (the ratio is the cost of assembling a prompt);
 * then the same while central_cloud broadcasts a template update every
 * 10 ms (each drops that template's cached prompts).
 *   npm run build && bash scripts/with-services.sh node dist/bench/templates.js
 */
import { connect, JSONCodec } from 'nats';
import { record, type TermObject } from '../src/codec/terms.js';
import { PortClient } from '../test/helpers/portClient.js';

const progress = (m: string): void => void process.stderr.write(`[bench:templates] ${m}\n`);
const natsUrl = process.env.TEST_NATS_URL ?? process.env.NATS_URL;
if (!natsUrl) throw new Error('run through scripts/with-services.sh (TEST_NATS_URL)');

const c = new PortClient({ env: { LOG_LEVEL: 'warn', NATS_URL: natsUrl, DATABASE_URL: '' } });
await c.ready;

async function measure(op: string, args: (i: number) => TermObject, n = 3_000, pipelined = 20_000): Promise<{ p50: number; p99: number; rate: number }> {
  for (let i = 0; i < 300; i++) await c.request(op, args(i));
  const lat: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const r = await c.request(op, args(i));
    lat.push(performance.now() - t0);
    if (!r.ok) throw new Error(`${op}: ${r.message}`);
  }
  lat.sort((a, b) => a - b);
  const t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: 256 }, async () => {
      while (next < pipelined) await c.request(op, args(next++));
    }),
  );
  return { p50: lat[Math.floor(n / 2)]! * 1000, p99: lat[Math.floor(n * 0.99)]! * 1000, rate: pipelined / ((performance.now() - t0) / 1000) };
}

// 50 distinct contexts: a warm cache serves repeats, as it would for a real app's hot prompts.
const gen = (i: number): TermObject => record({ context: `build feature ${i % 50}`, language: 'elixir', template_id: 'sparc_architecture' });
progress('echo baseline');
const echo = await measure('echo', (i) => record({ i }));
progress('generate_prompt, warm registry');
const warm = await measure('generate_prompt', gen);
progress('generate_prompt, every request a new context (renders each time)');
const cold = await measure('generate_prompt', (i) => record({ context: `unique feature ${i}-${Math.random()}`, language: 'elixir', template_id: 'sparc_architecture' }));

progress('generate_prompt while a template update is broadcast every 10 ms');
const nc = await connect({ servers: natsUrl });
const json = JSONCodec();
const content = (await c.request('get_template', record({ template_id: 'sparc_architecture' }))) as { value: TermObject };
const tpl = { ...((content.value.template as TermObject) as Record<string, unknown>) };
let updates = 0;
const timer = setInterval(() => {
  nc.publish('template.updated.sparc.sparc_architecture', json.encode({ ...tpl, template_content: `${String(tpl.template_content)}\n(rev ${++updates})` }));
}, 10);
const during = await measure('generate_prompt', gen);
clearInterval(timer);
await nc.drain();
await c.close();

const f = (x: number, d = 0): string => x.toFixed(d);
process.stdout.write(
  [
    '| op through the Port | p50 µs | p99 µs | pipelined req/s | ratio to echo (req/s) |',
    '|---|---:|---:|---:|---:|',
    `| echo (baseline) | ${f(echo.p50)} | ${f(echo.p99)} | ${f(echo.rate)} | 1.00× |`,
    `| generate_prompt, warm (50 contexts, cached) | ${f(warm.p50)} | ${f(warm.p99)} | ${f(warm.rate)} | ${(warm.rate / echo.rate).toFixed(2)}× |`,
    `| generate_prompt, new context each call (render) | ${f(cold.p50)} | ${f(cold.p99)} | ${f(cold.rate)} | ${(cold.rate / echo.rate).toFixed(2)}× |`,
    `| generate_prompt, warm, template updated every 10 ms (${updates} updates) | ${f(during.p50)} | ${f(during.p99)} | ${f(during.rate)} | ${(during.rate / echo.rate).toFixed(2)}× |`,
  ].join('\n') + '\n',
);
