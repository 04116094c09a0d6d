/**
 * What the dashboard costs (docs/dashboard.md, "What it costs"):
 *  1. The closed-loop Port benchmark (bench/erlang/loop_bench.erl, as bench/loopPort.ts runs it)
 *     with the page open and refreshing, beside the same run without, rounds alternating: the
 *     sidecar serves the dashboard (PROMPT_ENGINE_DASHBOARD) and a second process does what an
 *     open page does, and more: it holds the live streams of /experiments and of one experiment
 *     open, and reloads /experiments.json and /experiment.json every second.
 *  2. The experiments page with 1,000 experiments in Chromium (Debian's, through playwright-core):
 *     from navigation start to the page drawn, and the drawing alone, median of 5 loads.
 *   npm run bench:dashboard      (BENCH_ROUNDS=3, BENCH_PAIRS=40000 as bench:loop-port)
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { decode } from '../src/codec/etf.js';
import { loadConfig, REPO_ROOT } from '../src/config.js';
import { ErlFloat, Tuple, type Term } from '../src/codec/terms.js';

const progress = (m: string): void => void process.stderr.write(`[bench:dashboard] ${m}\n`);
const num = (x: Term): number => (x instanceof ErlFloat ? x.value : Number(x));
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const f = (n: number, d = 1): string => n.toFixed(d);

/** The refresher (a child process): what an open page does, every second, until killed. Prints its counts on SIGTERM. */
async function refresher(url: string): Promise<void> {
  let updates = 0;
  let loads = 0;
  let failures = 0;
  const streams = ['/experiments.events', '/experiment.events?name=exp-1&model=gpt-4o-mini'].map(async (p) => {
    for (;;) {
      try {
        const r = await fetch(url + p);
        const reader = r.body!.getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          updates += (Buffer.from(value).toString().match(/^data: /gm) ?? []).length;
        }
      } catch {
        failures++;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  });
  void streams;
  process.on('SIGTERM', () => {
    process.stdout.write(`${JSON.stringify({ updates, loads, failures })}\n`);
    process.exit(0);
  });
  for (;;) {
    for (const p of ['/experiments.json', '/experiment.json?name=exp-1&model=gpt-4o-mini']) {
      try {
        const r = await fetch(url + p);
        await r.text();
        loads++;
      } catch {
        failures++;
      }
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

interface LoopRun {
  chooseP50: number;
  chooseP99: number;
  pairs: number;
  echoPairs: number;
  page?: { updates: number; loads: number; failures: number };
}

async function loopRound(tmp: string, withPage: boolean): Promise<LoopRun> {
  const dataDir = fs.mkdtempSync(path.join(tmp, 'data-'));
  const port = await freePort();
  const env: NodeJS.ProcessEnv = { ...process.env, LOG_LEVEL: 'warn', PROMPT_ENGINE_DATA_DIR: dataDir, LLM_URL: '', PROMPT_ENGINE_RETRAIN_EVERY: '0', DATABASE_URL: '' };
  let page: ReturnType<typeof spawn> | undefined;
  let pageOut = '';
  if (withPage) {
    env.PROMPT_ENGINE_DASHBOARD = `127.0.0.1:${port}`;
    page = spawn(process.execPath, [fileURLToPath(import.meta.url), '--refresher', `http://127.0.0.1:${port}`], { stdio: ['ignore', 'pipe', 'inherit'] });
    page.stdout!.on('data', (c: Buffer) => (pageOut += c.toString()));
  }
  // execFileSync blocks this process: the refresher runs in its own.
  const out = await new Promise<string>((resolve, reject) => {
    const erl = spawn('erl', ['-noshell', '-pa', tmp, '-eval', `loop_bench:main(${JSON.stringify([path.join(REPO_ROOT, 'port', 'prompt_engine'), '--port-fds'])})`], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    let text = '';
    erl.stdout.on('data', (c: Buffer) => (text += c.toString()));
    erl.on('exit', (code) => (code === 0 ? resolve(text) : reject(new Error(`loop_bench exited ${code}: ${text}`))));
  });
  let pageFigures: LoopRun['page'];
  if (page !== undefined) {
    const exited = new Promise((r) => page!.on('exit', r));
    page.kill('SIGTERM');
    await exited;
    pageFigures = JSON.parse(pageOut.trim() || '{}') as LoopRun['page'];
  }
  const line = out.split('\n').find((l) => l.startsWith('result '));
  if (line === undefined) throw new Error(`no result: ${out}`);
  const items = (decode(Buffer.from(line.slice(7), 'hex')) as Tuple).items.map((x) => (x instanceof Tuple ? 0 : num(x)));
  fs.rmSync(dataDir, { recursive: true, force: true });
  return { chooseP50: items[2]!, chooseP99: items[3]!, pairs: items[4]!, echoPairs: items[5]!, page: pageFigures };
}

async function renderThousand(tmp: string): Promise<{ navToDrawn: number[]; draw: number[]; bytes: number; experiments: number } | string> {
  const chromiumPath = '/usr/bin/chromium';
  if (!fs.existsSync(chromiumPath)) return `${chromiumPath} is missing (scripts/provision.sh installs it)`;
  const { createEngine } = await import('../src/services.js');
  const { createLogger } = await import('../src/log.js');
  const { createOpTable } = await import('../src/ops/index.js');
  const { record } = await import('../src/codec/terms.js');
  const { startDashboard, opCaller } = await import('../src/dashboard/server.js');
  const { chromium } = await import('playwright-core');
  const engine = createEngine(loadConfig({ ...process.env, DATABASE_URL: '', NATS_URL: '', LLM_URL: '' }, { dataDir: fs.mkdtempSync(path.join(tmp, 'render-')), retrainEvery: 0 }), createLogger('warn'));
  const table = createOpTable();
  const ctx = { signal: new AbortController().signal, engine, log: engine.log, transport: 'bench' };
  const N = 1000;
  progress(`making ${N} experiments with outcomes`);
  for (let i = 0; i < N; i++) {
    for (let k = 0; k < 5; k++) {
      const c = await table.dispatch('choose_prompt', record({ experiment: `exp-${i}`, prompt: `Classify the ticket {ticket} (${i}).`, model: 'gpt-4o-mini' }), ctx);
      if (!c.ok) throw new Error(c.message);
      const v = c.value as Record<string, Term>;
      await table.dispatch('track_execution', record({ prompt_id: v.prompt_id!, success: (i + k) % 3 !== 0, execution_time_ms: 1, metadata: v.metadata! }), ctx);
    }
  }
  const dash = await startDashboard({ address: { host: '127.0.0.1', port: 0 }, call: opCaller(engine, table), log: engine.log });
  const bytes = (await (await fetch(`${dash.url}/experiments.json`)).text()).length;
  const browser = await chromium.launchPersistentContext(fs.mkdtempSync(path.join(tmp, 'profile-')), {
    executablePath: chromiumPath,
    headless: true,
    viewport: { width: 1400, height: 1000 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage();
  const navToDrawn: number[] = [];
  const draw: number[] = [];
  let rows = 0;
  for (let i = 0; i < 6; i++) {
    await page.goto(`${dash.url}/experiments`);
    for (let t = 0; !(await page.evaluate('document.body.dataset.firstRenderAt !== undefined')); t++) {
      if (t > 600) throw new Error('the page never rendered');
      await new Promise((r) => setTimeout(r, 10));
    }
    rows = Number(await page.evaluate('document.querySelectorAll("tr[data-experiment]").length'));
    if (i === 0) continue; // the first load warms the browser's caches
    navToDrawn.push(Number(await page.evaluate('document.body.dataset.firstRenderAt')));
    draw.push(Number(await page.evaluate('document.body.dataset.renderMs')));
  }
  await browser.close();
  await dash.close();
  await engine.close();
  return { navToDrawn, draw, bytes, experiments: rows };
}

async function main(): Promise<void> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-bench-dashboard-'));
  execFileSync('erlc', ['-o', tmp, path.join(REPO_ROOT, 'bench', 'erlang', 'loop_bench.erl')]);
  const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
  const without: LoopRun[] = [];
  const withPage: LoopRun[] = [];
  for (let i = 0; i < rounds; i++) {
    progress(`round ${i + 1}/${rounds}: without the page`);
    without.push(await loopRound(tmp, false));
    progress(`round ${i + 1}/${rounds}: with the page open and refreshing`);
    withPage.push(await loopRound(tmp, true));
  }
  const render = await renderThousand(tmp);
  const m = (rs: LoopRun[], k: 'chooseP50' | 'chooseP99' | 'pairs'): number => median(rs.map((r) => r[k]));
  const pages = withPage.map((r) => r.page!);
  const lines = [
    `| closed loop through the Port from Erlang (PGlite, 100 live experiments), median of ${rounds} alternating rounds | without the page | with the page open and refreshing | with / without |`,
    '|---|---:|---:|---:|',
    `| choose_prompt p50 µs | ${f(m(without, 'chooseP50'))} | ${f(m(withPage, 'chooseP50'))} | ${f(m(withPage, 'chooseP50') / m(without, 'chooseP50'), 2)}× |`,
    `| choose_prompt p99 µs | ${f(m(without, 'chooseP99'))} | ${f(m(withPage, 'chooseP99'))} | ${f(m(withPage, 'chooseP99') / m(without, 'chooseP99'), 2)}× |`,
    `| choose_prompt + track_execution pairs/s | ${f(m(without, 'pairs'), 0)} | ${f(m(withPage, 'pairs'), 0)} | ${f(m(withPage, 'pairs') / m(without, 'pairs'), 2)}× |`,
    '',
    `Rounds (pairs/s, choose_prompt p50 µs), in the order run: ${without.map((w, i) => `without ${f(w.pairs, 0)} / ${f(w.chooseP50)}, with ${f(withPage[i]!.pairs, 0)} / ${f(withPage[i]!.chooseP50)}`).join('; ')}. Machine load average at the end: ${os.loadavg().map((x) => f(x, 2)).join(', ')}.`,
    '',
    `The page's side, per round with the page: ${pages.map((p) => `${p.updates} live updates and ${p.loads} JSON loads (${p.failures} failed)`).join('; ')}.`,
    '',
  ];
  if (typeof render === 'string') lines.push(`experiments page with 1,000 experiments: not measured (${render})`);
  else
    lines.push(
      `| the experiments page with ${render.experiments} experiments in Chromium (median of ${render.navToDrawn.length} loads after one warm-up) | ms |`,
      '|---|---:|',
      `| navigation start → page drawn (HTML, script, uPlot, ${Math.round(render.bytes / 1024)} KiB of JSON, ${render.experiments} rows with their charts) | ${f(median(render.navToDrawn))} |`,
      `| drawing alone (building the table and its charts) | ${f(median(render.draw))} |`,
    );
  process.stdout.write(`${lines.join('\n')}\n`);
  fs.rmSync(tmp, { recursive: true, force: true });
}

if (process.argv[2] === '--refresher') void refresher(process.argv[3]!);
else
  main().catch((err: unknown) => {
    process.stderr.write(`bench:dashboard failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
