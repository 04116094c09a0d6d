/**
 * The dashboard in a real browser (Debian's chromium, driven by
 * playwright-core) over a real engine running the closed loop: the counts
 * and the leader the ops give are the ones the pages show, the charts are
 * drawn, the page updates itself while the loop runs (no reload), `pin`
 * works with the token and is refused without it, and prompt texts holding
 * `<script>` and an `onerror=` attribute stay text. Screenshots of each
 * page are saved in the run's temp dir (DASHBOARD_SCREENSHOT=path also
 * writes the experiment page there: docs/dashboard-experiment.png is made
 * so). Then the HTTP edge without a browser: bind refusal, Host check,
 * cross-site refusal, limits, and the CLI and Port entry points.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import type { TermObject } from '../src/codec/terms.js';
import { REPO_ROOT } from '../src/config.js';
import { fromJson, type Json } from '../src/codec/json.js';
import { startDashboard, type DashboardHandle } from '../src/dashboard/server.js';
import { localEngine, type LocalEngine } from './helpers/engine.js';
import { startFakeLlm } from './helpers/fakeLlm.js';
import { until } from './helpers/poll.js';

const CHROMIUM = '/usr/bin/chromium';
const TOKEN = 'test-token-0123456789abcdef';
const BASE = 'Label the ticket {ticket} as billing, bug or other.';
const GOOD = 'You are a support lead. Label the ticket {ticket} as billing, bug or other.';
const HOSTILE = 'Label the ticket {ticket} <script>window.__pwned = "script"</script><img src=x onerror="window.__pwned = \'onerror\'"> as billing, bug or other.';
const OTHER = 'Read the ticket {ticket} carefully, then label it billing, bug or other.';
const RATE: Record<string, number> = { [BASE]: 0.3, [GOOD]: 0.9, [HOSTILE]: 0.5, [OTHER]: 0.35 };

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-dashboard-'));
const shots = path.join(tmp, 'screenshots');
fs.mkdirSync(shots, { recursive: true });
const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  // Keep the screenshots (the run's results); the engines' data and the browser profile go.
  for (const d of fs.readdirSync(tmp)) if (d !== 'screenshots') fs.rmSync(path.join(tmp, d), { recursive: true, force: true });
  process.stderr.write(`dashboard screenshots: ${shots}\n`);
});

const ok = async (pe: LocalEngine, op: string, args: Json): Promise<TermObject> => {
  const r = await pe.call(op, fromJson(args));
  if (!r.ok) throw new Error(`${op}: ${r.reason}: ${r.message}`);
  return r.value as TermObject;
};

let round = 0;
async function play(pe: LocalEngine, rounds: number): Promise<void> {
  for (let i = 0; i < rounds; i++, round++) {
    const c = await ok(pe, 'choose_prompt', { experiment: 'triage', prompt: BASE, context: { model: 'm1' } });
    const success = ((round * 7919) % 100) / 100 < (RATE[String(c.prompt)] ?? 0.3);
    await ok(pe, 'track_execution', { prompt_id: String(c.prompt_id), success, execution_time_ms: 1 + (round % 50), metadata: c.metadata as Json });
  }
}

/**
 * Wait until an expression is true in the page. Polled from here with page.evaluate (run by the
 * debugger, so the page's CSP, which forbids eval, still holds for the page itself).
 */
async function pageUntil(page: Page, expr: string, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await page.evaluate(expr))) {
    if (Date.now() > until) throw new Error(`the page never had ${expr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

interface LiveStream {
  status: number;
  /** The stream up to its first event (or the refusal's body). */
  first: string;
  stop(): void;
}

/** A live page's event stream, read until its first event. */
async function openStream(url: string): Promise<LiveStream> {
  const ctl = new AbortController();
  const r = await fetch(url, { signal: ctl.signal });
  if (r.status !== 200) return { status: r.status, first: await r.text(), stop: () => undefined };
  const reader = r.body!.getReader();
  let text = '';
  while (!text.includes('data: ')) text += Buffer.from((await reader.read()).value!).toString();
  return { status: 200, first: text, stop: () => ctl.abort() };
}

const experimentOf = async (pe: LocalEngine): Promise<TermObject> => ((await ok(pe, 'experiment', { experiment: 'triage', model: 'm1' })).experiments as TermObject[])[0]!;

describe('the dashboard in a real browser, over the closed loop', () => {
  let pe: LocalEngine;
  let dash: DashboardHandle;
  let context: BrowserContext;
  let page: Page;
  const problems: string[] = [];

  beforeAll(async () => {
    expect(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: scripts/provision.sh installs Debian's chromium`).toBe(true);
    const llm = await startFakeLlm(() => [OTHER, HOSTILE, GOOD]);
    cleanups.push(() => llm.close());
    // The suite's PostgreSQL (a schema of this data dir's own): the pages read the store whatever its backend, and a fresh PGlite store costs seconds.
    pe = localEngine({ llmUrl: llm.url, loopAwaitProposals: true, retrainEvery: 0, dataDir: path.join(tmp, 'data') }, { postgres: true });
    cleanups.push(() => pe.close());
    await play(pe, 300);
    // Feedback whose comment is hostile too (the tracked-prompts page shows comments).
    await ok(pe, 'track_feedback', { prompt_id: 'p-feedback', feedback_type: 'quality', rating: 2, comment: '<img src=x onerror="window.__pwned = \'comment\'">bad' });
    await ok(pe, 'track_feedback', { prompt_id: 'p-feedback', feedback_type: 'quality', rating: 5, comment: 'clear' });
    dash = await startDashboard({ address: { host: '127.0.0.1', port: 0 }, token: TOKEN, call: (op, args) => pe.call(op, fromJson(args)), log: pe.engine.log, refreshMs: 200 });
    cleanups.push(() => dash.close());
    context = await chromium.launchPersistentContext(path.join(tmp, 'profile'), {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1400, height: 1000 },
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    cleanups.push(() => context.close());
    page = await context.newPage();
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console: ${m.text()}`);
    });
    page.on('dialog', (d) => {
      problems.push(`dialog: ${d.message()}`);
      void d.dismiss();
    });
  }, 180_000);

  it('lists every experiment with the counts, leader and base the op gives, and a chart per row', async () => {
    const e = await experimentOf(pe);
    await page.goto(`${dash.url}/experiments`);
    const row = page.locator('tr[data-experiment="triage"][data-model="m1"]');
    await row.waitFor();
    // The page is live: its outcomes cell is the op's count (nothing is played meanwhile).
    expect(await row.locator('td[data-col="outcomes"]').textContent()).toBe(String(e.outcomes));
    expect(e.outcomes).toBe(300);
    const leader = e.leader as TermObject;
    expect(await row.textContent()).toContain(`${((leader.success_rate as { value: number }).value * 100).toFixed(1)}%`);
    expect(await row.locator('svg.spark').count()).toBe(1);
    // The JSON beside the page is the same data.
    const json = (await (await fetch(`${dash.url}/experiments.json`)).json()) as { experiments: Array<{ experiment: string; outcomes: number; leader: { prompt_id: string; interval: number[] } }> };
    expect(json.experiments[0]!.outcomes).toBe(300);
    expect(json.experiments[0]!.leader.prompt_id).toBe(leader.prompt_id);
    expect(json.experiments[0]!.leader.interval).toHaveLength(2);
    await page.screenshot({ path: path.join(shots, 'experiments.png'), fullPage: true });
  }, 60_000);

  it('shows one experiment: every variant, the leader, charts, and the hostile prompt as inert text', async () => {
    const e = await experimentOf(pe);
    const leaderId = String((e.leader as TermObject).prompt_id);
    await page.goto(`${dash.url}/experiment?name=triage&model=m1`);
    await page.locator('[data-field="outcomes"]').waitFor();
    const variants = e.variants as TermObject[];
    expect(await page.locator('tr[data-variant]').count()).toBe(variants.length);
    expect(await page.locator(`tr[data-variant="${leaderId}"] .badge.leader`).count()).toBe(1);
    expect(String(variants.find((v) => v.prompt_id === leaderId)!.text)).toBe(GOOD);
    expect(await page.locator('[data-field="outcomes"]').textContent()).toBe(String(e.outcomes));
    // The hostile prompt is on the page as its literal text, and nothing of it ran or became markup.
    const hostileRow = page.locator('tr[data-variant]', { hasText: '<script>window.__pwned' });
    expect(await hostileRow.count()).toBe(1);
    expect(await hostileRow.locator('.prompt').textContent()).toBe(HOSTILE);
    expect(await page.locator('main script, main img').count()).toBe(0);
    expect(await page.evaluate('window.__pwned')).toBeUndefined();
  }, 60_000);

  it('updates by itself while the loop runs, without a reload, and charts the outcomes', async () => {
    await page.evaluate('window.__sameDocument = true');
    let expected = Number(await page.locator('[data-field="outcomes"]').textContent());
    for (let step = 0; step < 6; step++) {
      await play(pe, 30);
      expected += 30;
      expect((await experimentOf(pe)).outcomes).toBe(expected);
      // The page shows the new count by itself (the event stream), in the same document.
      await pageUntil(page, `document.querySelector('[data-field="outcomes"]')?.textContent === '${expected}'`);
    }
    expect(await page.evaluate('window.__sameDocument')).toBe(true);
    expect(Number(await page.evaluate('document.body.dataset.updates'))).toBeGreaterThanOrEqual(6);
    expect(await page.locator('#live').textContent()).toBe('live');
    // The charts (uPlot, on canvas): success rate served and each variant's share of traffic, over outcomes.
    expect(await page.locator('.chart[data-chart^="success rate served"] canvas').count()).toBeGreaterThanOrEqual(1);
    expect(await page.locator('.chart[data-chart^="each variant"] canvas').count()).toBeGreaterThanOrEqual(1);
    // Charts of earlier redraws are gone, not only out of the page: uPlot holds a window listener per chart until
    // it is destroyed (and one of its own), so an open tab would keep every chart it ever drew.
    const cdp = await context.newCDPSession(page);
    const win = await cdp.send('Runtime.evaluate', { expression: 'window' });
    const { listeners } = await cdp.send('DOMDebugger.getEventListeners', { objectId: win.result.objectId! });
    expect(listeners.filter((l) => l.type === 'dppxchange').length).toBe((await page.locator('.uplot').count()) + 1);
    await cdp.detach();
    expect(await page.evaluate('window.__pwned')).toBeUndefined();
    await page.screenshot({ path: path.join(shots, 'experiment.png'), fullPage: true });
    if (process.env.DASHBOARD_SCREENSHOT) await page.screenshot({ path: path.resolve(REPO_ROOT, process.env.DASHBOARD_SCREENSHOT), clip: { x: 0, y: 0, width: 1400, height: 1000 } });
  }, 90_000);

  it('refuses pin without the token, pins with it', async () => {
    const e = await experimentOf(pe);
    const target = (e.variants as TermObject[]).find((v) => v.text === OTHER)!;
    const id = String(target.prompt_id);
    await page.evaluate("sessionStorage.removeItem('prompt-engine-dashboard-token')");
    await page.locator(`tr[data-variant="${id}"] button[data-action="pin"]`).click();
    await pageUntil(page, 'document.body.dataset.lastAction !== undefined');
    expect(await page.evaluate('document.body.dataset.lastAction')).toBe('401');
    expect((await experimentOf(pe)).pinned).toBeNull();
    await page.fill('#token', TOKEN);
    await page.click('#token-form button');
    await page.evaluate('delete document.body.dataset.lastAction');
    await page.locator(`tr[data-variant="${id}"] button[data-action="pin"]`).click();
    await pageUntil(page, 'document.body.dataset.lastAction !== undefined');
    expect(await page.evaluate('document.body.dataset.lastAction')).toBe('ok');
    expect((await experimentOf(pe)).pinned).toBe(id);
    await page.locator(`tr[data-variant="${id}"] .badge.pinned`).waitFor({ timeout: 10_000 });
    // Served now: only the pinned variant.
    const c = await ok(pe, 'choose_prompt', { experiment: 'triage', prompt: BASE, context: { model: 'm1' } });
    expect(c.prompt_id).toBe(id);
  }, 60_000);

  it("draws an experiment from the op's history (the history: true contract), marks included, at once", async () => {
    // An op table that takes `history: true`, as the experiment op will: the page must use it, not its live fallback.
    const variants = [
      { prompt_id: 'p-base', text: BASE, origin: 'base', state: 'retired', successes: 30, count: 100, success_rate: 0.3, posterior_mean: 0.3, p_best: 0, predicted: null },
      { prompt_id: 'p-good', text: GOOD, origin: 'llm', state: 'active', successes: 720, count: 800, success_rate: 0.9, posterior_mean: 0.9, p_best: 0.99, predicted: 0.6 },
      { prompt_id: 'p-bad', text: HOSTILE, origin: 'llm', state: 'banned', successes: 10, count: 100, success_rate: 0.1, posterior_mean: 0.11, p_best: 0, predicted: 0.4 },
    ];
    const history = Array.from({ length: 10 }, (_, i) => ({ outcomes: (i + 1) * 100, successes: [30, 50, 110, 190, 280, 370, 460, 550, 640, 730][i]!, variants: (i < 2 ? { 'p-base': 50, 'p-bad': 50 } : { 'p-good': 100 }) as { [k: string]: Json } }));
    const events = [
      { kind: 'admitted', prompt_id: 'p-good', outcomes: 150, at: '2026-01-01T00:00:00Z' },
      { kind: 'banned', prompt_id: 'p-bad', outcomes: 200, at: '2026-01-01T00:01:00Z' },
      { kind: 'leader', prompt_id: 'p-good', outcomes: 300, at: '2026-01-01T00:02:00Z' },
      { kind: 'retired', prompt_id: 'p-base', outcomes: 300, at: '2026-01-01T00:02:00Z' },
    ];
    const exp = { experiment: 'hist', model: 'm1', generation: 1, status: 'running', pinned: null, outcomes: 1000, proposals_made: 2, leader: { prompt_id: 'p-good', origin: 'llm', success_rate: 0.9, count: 800 }, base: { prompt_id: 'p-base', success_rate: 0.3, count: 100 }, improvement: 0.6, active: 1, variants, history, events };
    const asked: Json[] = [];
    const call = async (op: string, args: { [k: string]: Json }) => {
      asked.push({ op, ...args });
      if (op === 'describe') return { ok: true as const, value: fromJson({ ops: [{ name: 'experiment', args: [{ name: 'experiment' }, { name: 'history' }] }] }) };
      if (op === 'experiment') return { ok: true as const, value: fromJson({ experiments: [args.experiment === undefined ? { ...exp, variants: 3 } : exp] }) };
      if (op === 'query') return { ok: true as const, value: fromJson({ kind: 'evolution_history', rows: [] }) };
      return pe.call(op, fromJson(args));
    };
    const d = await startDashboard({ address: { host: '127.0.0.1', port: 0 }, call, log: pe.engine.log });
    cleanups.push(() => d.close());
    const p = await context.newPage();
    p.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
    await p.goto(`${d.url}/experiment?name=hist&model=m1`);
    await p.locator('.chart[data-chart^="success rate served"] canvas').waitFor();
    expect(asked).toContainEqual({ op: 'experiment', experiment: 'hist', model: 'm1', history: true });
    expect(await p.locator('.notice', { hasText: 'gives no history' }).count()).toBe(0);
    expect(await p.locator('.chart[data-chart^="each variant"] canvas').count()).toBe(1);
    expect(await p.locator('.chart', { hasText: 'leader change (solid green) × 1' }).count()).toBe(2);
    expect(await p.locator('.chart', { hasText: 'ban (dashed red) × 1' }).count()).toBe(2);
    // Retirements and bans from the events, and the last change.
    expect(await p.locator('table', { hasText: 'banned' }).locator('td.state-banned').count()).toBeGreaterThanOrEqual(1);
    expect(await p.locator('.card', { hasText: 'last change' }).textContent()).toContain('retired');
    expect(await p.evaluate('window.__pwned')).toBeUndefined();
    await p.screenshot({ path: path.join(shots, 'experiment-history.png'), fullPage: true });
    // The list draws each row's chart from the history too.
    await p.goto(`${d.url}/experiments`);
    await p.locator('tr[data-experiment="hist"] svg.spark polyline').waitFor();
    await p.close();
  }, 60_000);

  it('shows tracked prompts, models and health, with hostile comments inert', async () => {
    await page.goto(`${dash.url}/prompts`);
    await page.locator('[data-field="executions"]').waitFor();
    const json = (await (await fetch(`${dash.url}/prompts.json`)).json()) as { totals: { executions: number }; best: Array<{ prompt_id: string; count: number }>; feedback: { ratings: Record<string, number> } };
    expect(await page.locator('[data-field="executions"]').textContent()).toBe(String(json.totals.executions));
    expect(json.totals.executions).toBeGreaterThanOrEqual(480);
    expect(json.best.length).toBeGreaterThan(0);
    expect(json.feedback.ratings['2']).toBe(1);
    expect(await page.locator('main', { hasText: '<img src=x onerror=' }).count()).toBe(1);
    expect(await page.locator('main img').count()).toBe(0);
    await page.screenshot({ path: path.join(shots, 'prompts.png'), fullPage: true });

    await page.goto(`${dash.url}/models`);
    await page.locator('[data-field="serving"]').waitFor();
    const serving = ((await ok(pe, 'models', {})).serving as string) ?? '';
    expect(await page.locator('[data-field="serving"]').textContent()).toBe(serving);
    await page.screenshot({ path: path.join(shots, 'models.png'), fullPage: true });

    await page.goto(`${dash.url}/health`);
    await page.locator('[data-field="status"]').waitFor();
    expect(await page.locator('[data-field="status"]').textContent()).toBe('ok');
    await page.screenshot({ path: path.join(shots, 'health.png'), fullPage: true });
    expect(await page.evaluate('window.__pwned')).toBeUndefined();
    // No script error, no CSP violation, no dialog; the one failed load is the refused pin (401).
    expect(problems.filter((p) => !p.includes('status of 401'))).toEqual([]);
  }, 60_000);
});

describe('the dashboard over HTTP', () => {
  const post = (url: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> =>
    fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  let pe: LocalEngine;

  beforeAll(async () => {
    pe = localEngine({ retrainEvery: 0, dataDir: path.join(tmp, 'http') }, { postgres: true });
    cleanups.push(() => pe.close());
    await ok(pe, 'choose_prompt', { experiment: 'x', prompt: BASE, context: { model: 'm1' } });
  });

  const start = async (token?: string, host = '127.0.0.1'): Promise<DashboardHandle> => {
    const d = await startDashboard({ address: { host, port: 0 }, token, call: (op, args) => pe.call(op, fromJson(args)), log: pe.engine.log });
    cleanups.push(() => d.close());
    return d;
  };

  it('refuses a non-loopback bind without a token, and a short token, saying why', async () => {
    await expect(start(undefined, '0.0.0.0')).rejects.toThrow(/not a loopback address, without a token/);
    await expect(start('short', '127.0.0.1')).rejects.toThrow(/at least 16/);
  });

  it('is read-only without a token; with one, refuses cross-site requests and a wrong token', async () => {
    const ro = await start();
    const r0 = await post(`${ro.url}/action`, { experiment: 'x', model: 'm1', action: 'stop' }, { 'x-prompt-engine-token': TOKEN });
    expect(r0.status).toBe(403);
    expect(((await r0.json()) as { error: { message: string } }).error.message).toMatch(/read-only/);
    const d = await start(TOKEN);
    const act = { experiment: 'x', model: 'm1', action: 'stop' };
    expect((await post(`${d.url}/action`, act)).status).toBe(401);
    expect((await post(`${d.url}/action`, act, { 'x-prompt-engine-token': 'wrong-token-0123456789' })).status).toBe(401);
    expect((await post(`${d.url}/action`, act, { 'x-prompt-engine-token': TOKEN, origin: 'http://evil.example' })).status).toBe(403);
    expect((await post(`${d.url}/action`, act, { 'x-prompt-engine-token': TOKEN, 'sec-fetch-site': 'cross-site' })).status).toBe(403);
    // A form post from another site carries the token as a field: refused for where it came from.
    const form = await fetch(`${d.url}/action`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', 'sec-fetch-site': 'cross-site' }, body: `token=${TOKEN}&experiment=x&model=m1&action=stop` });
    expect(form.status).toBe(403);
    expect(((await ok(pe, 'experiment', { experiment: 'x' })).experiments as TermObject[])[0]!.status).toEqual(expect.objectContaining({ name: 'running' }));
    const good = await post(`${d.url}/action`, act, { 'x-prompt-engine-token': TOKEN, origin: d.url, 'sec-fetch-site': 'same-origin' });
    expect(good.status).toBe(200);
    expect(((await ok(pe, 'experiment', { experiment: 'x' })).experiments as TermObject[])[0]!.status).toEqual(expect.objectContaining({ name: 'stopped' }));
    // A bad action names the field; an unknown experiment is the op's not_found.
    expect((await post(`${d.url}/action`, { ...act, action: 'explode' }, { 'x-prompt-engine-token': TOKEN })).status).toBe(400);
    expect((await post(`${d.url}/action`, { ...act, experiment: 'nope' }, { 'x-prompt-engine-token': TOKEN })).status).toBe(404);
    // Bodies have a limit.
    expect((await post(`${d.url}/action`, { pad: 'x'.repeat(20_000) }, { 'x-prompt-engine-token': TOKEN })).status).toBe(413);
  });

  it('answers only to loopback names on a loopback bind (DNS rebinding), with a strict CSP', async () => {
    const d = await start();
    const port = new URL(d.url).port;
    const rebinding = await new Promise<number>((resolve, reject) => {
      // fetch() will not send a foreign Host header: speak HTTP by hand.
      import('node:http').then(({ request }) => {
        const req = request({ host: '127.0.0.1', port, path: '/experiments.json', headers: { host: `evil.example:${port}` } }, (res) => resolve(res.statusCode ?? 0));
        req.on('error', reject);
        req.end();
      }, reject);
    });
    expect(rebinding).toBe(403);
    const r = await fetch(`${d.url}/experiments`);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-security-policy')).toContain("script-src 'self'");
    const html = await r.text();
    expect(html).not.toContain('triage');
    expect((await fetch(`${d.url}/experiment.json?name=nope`)).status).toBe(404);
    expect((await fetch(`${d.url}/nothing`)).status).toBe(404);
    expect((await fetch(`${d.url}/assets/uPlot.iife.min.js`)).status).toBe(200);
    expect((await fetch(`${d.url}/assets/app.js`)).status).toBe(200);
  });

  it('limits live streams, and frees a viewer\'s slot when it goes away', async () => {
    const d = await startDashboard({ address: { host: '127.0.0.1', port: 0 }, call: (op, args) => pe.call(op, fromJson(args)), log: pe.engine.log, maxStreams: 2 });
    cleanups.push(() => d.close());
    const open = (): Promise<LiveStream> => openStream(`${d.url}/experiments.events`);
    const a = await open();
    const b = await open();
    expect([a.status, b.status]).toEqual([200, 200]);
    expect(a.first).toContain('"experiment":"x"');
    const c = await open();
    expect(c.status).toBe(503);
    expect(c.first).toMatch(/more than 2 live pages/);
    a.stop();
    // The slot comes back once the server sees the connection close.
    for (let i = 0; ; i++) {
      const again = await open();
      if (again.status === 200) {
        again.stop();
        break;
      }
      if (i > 100) throw new Error('the closed stream never freed its slot');
      await new Promise((r) => setTimeout(r, 50));
    }
    b.stop();
  });

  it('shares one poller among the viewers of a page, whatever parameters it does not read', async () => {
    const d = await startDashboard({ address: { host: '127.0.0.1', port: 0 }, call: (op, args) => pe.call(op, fromJson(args)), log: pe.engine.log });
    cleanups.push(() => d.close());
    const open = async (query: string): Promise<() => void> => {
      const stream = await openStream(`${d.url}/${query}`);
      expect(stream.status).toBe(200);
      return stream.stop;
    };
    const stops = [
      await open('experiments.events?min_count=1'),
      await open('experiments.events?min_count=2&name=a'),
      await open('experiment.events?name=x&model=m1&min_count=5'),
      await open('experiment.events?model=m1&name=x'),
    ];
    expect(d.figures()).toMatchObject({ streams: 4, pages_watched: 2 });
    for (const stop of stops) stop();
  });

  it('disconnects a viewer that stopped reading instead of buffering for it without end', async () => {
    const d = await startDashboard({ address: { host: '127.0.0.1', port: 0 }, call: (op, args) => pe.call(op, fromJson(args)), log: pe.engine.log, refreshMs: 20, maxStreamBacklog: 16 * 1024 });
    cleanups.push(() => d.close());
    const { port } = new URL(d.url);
    // A viewer that asks for the live page and then reads nothing.
    const viewer = net.connect(Number(port), '127.0.0.1');
    viewer.on('error', () => undefined);
    await new Promise<void>((r) => viewer.once('connect', () => r()));
    viewer.write(`GET /experiment.events?name=wide&model=m1 HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
    viewer.pause();
    cleanups.push(() => viewer.destroy());
    await until(() => d.figures().streams === 1, 10_000);
    // A long prompt makes each event of its page large (every variant's text): the socket's buffers fill sooner.
    const wide = `${BASE} ${'Keep the answer to one word, and say nothing else about the ticket. '.repeat(200)}`;
    // The page changes (outcomes) until the server has given up on the viewer: the socket's buffers fill, then its backlog.
    const dropped = (): number => Number(d.figures().streams_dropped ?? 0);
    const giveUpAt = Date.now() + 60_000;
    for (let i = 0; dropped() === 0; i++) {
      if (Date.now() > giveUpAt) throw new Error(`the viewer that reads nothing was never disconnected (${i} outcomes)`);
      const c = await ok(pe, 'choose_prompt', { experiment: 'wide', prompt: wide, context: { model: 'm1' } });
      await ok(pe, 'track_execution', { prompt_id: String(c.prompt_id), success: i % 2 === 0, execution_time_ms: 1, metadata: c.metadata as Json });
    }
    await until(() => d.figures().streams === 0, 10_000);
  }, 120_000);

  it('reads fewer feedback rows when 1,000 pass one query reply (large contexts), rather than showing an error', async () => {
    // 300 ratings of about 60 KB each: 18 MB, past the 16 MiB one query reply carries.
    const context = { notes: 'n'.repeat(60_000) };
    await Promise.all(Array.from({ length: 300 }, (_, i) => ok(pe, 'track_feedback', { prompt_id: 'p-large', feedback_type: 'quality', rating: 1 + (i % 5), context })));
    const d = await start();
    const json = (await (await fetch(`${d.url}/prompts.json`)).json()) as { errors: unknown[]; feedback: { count: number; ratings: Record<string, number> } };
    expect(json.errors).toEqual([]);
    expect(json.feedback.count).toBe(50);
    expect(Object.values(json.feedback.ratings).reduce((a, b) => a + b, 0)).toBe(50);
  }, 60_000);

  it('takes force from a form as from JSON', async () => {
    const seen: Json[] = [];
    const d = await startDashboard({ address: { host: '127.0.0.1', port: 0 }, token: TOKEN, call: (op, args) => (seen.push(args), pe.call(op, fromJson(args))), log: pe.engine.log });
    cleanups.push(() => d.close());
    const form = (fields: string): Promise<Response> =>
      fetch(`${d.url}/action`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', origin: d.url, 'sec-fetch-site': 'same-origin' }, body: `token=${TOKEN}&experiment=x&model=m1&${fields}` });
    expect((await form('action=pin&force=true')).status).toBe(200);
    expect(seen.at(-1)).toMatchObject({ action: 'pin', force: true });
    expect((await form('action=unpin')).status).toBe(200);
    expect(seen.at(-1)).not.toHaveProperty('force');
  });

  it('never shows the token: not in health, stats or the page data', async () => {
    const d = await start(TOKEN);
    for (const p of ['health', 'models', 'experiments', 'prompts']) expect(await (await fetch(`${d.url}/${p}.json`)).text()).not.toContain(TOKEN);
    expect(JSON.stringify(await ok(pe, 'stats', {}))).not.toContain(TOKEN);
  });
});

describe('the dashboard from the command line and the Port', () => {
  const procs: ChildProcess[] = [];
  afterAll(() => {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGTERM');
  });
  const cli = path.join(REPO_ROOT, 'dist', 'src', 'cli.js');

  function run(args: string[], env: Record<string, string> = {}): { proc: ChildProcess; stderr: () => string; exited: Promise<number> } {
    const proc = spawn(process.execPath, [cli, ...args], { env: { ...process.env, LOG_LEVEL: 'warn', DATABASE_URL: '', NATS_URL: '', PROMPT_ENGINE_DATA_DIR: fs.mkdtempSync(path.join(tmp, 'cli-')), ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    procs.push(proc);
    let err = '';
    proc.stderr!.on('data', (c: Buffer) => (err += c.toString()));
    return { proc, stderr: () => err, exited: new Promise((r) => proc.on('exit', (code) => r(code ?? -1))) };
  }

  const waitFor = async (f: () => RegExpExecArray | null, what: string, exited: Promise<number>): Promise<RegExpExecArray> => {
    let done = false;
    void exited.then(() => (done = true));
    for (;;) {
      const m = f();
      if (m !== null) return m;
      if (done) throw new Error(`exited before ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  it('`dashboard --http` serves the page; a non-loopback bind without a token ends with the reason', async () => {
    const bad = run(['dashboard', '--http', '0.0.0.0:0']);
    expect(await bad.exited).toBe(2);
    expect(bad.stderr()).toMatch(/not a loopback address, without a token.*PROMPT_ENGINE_DASHBOARD_TOKEN/);
    const good = run(['dashboard', '--http', '127.0.0.1:0']);
    const m = await waitFor(() => /dashboard on (http:\/\/\S+)\//.exec(good.stderr()), 'the dashboard line', good.exited);
    const health = (await (await fetch(`${m[1]}/health.json`)).json()) as { health: { status: string } };
    expect(health.health.status).toBe('ok');
    good.proc.kill('SIGTERM');
    expect(await good.exited).toBe(0);
  }, 60_000);

  it('a Port sidecar with PROMPT_ENGINE_DASHBOARD serves the page beside its frames, and says no token in health', async () => {
    const s = run(['port'], { PROMPT_ENGINE_DASHBOARD: '127.0.0.1:0', PROMPT_ENGINE_DASHBOARD_TOKEN: TOKEN, LOG_LEVEL: 'info' });
    const m = await waitFor(() => /"url":"(http:\/\/[^"]+)".*dashboard serving/.exec(s.stderr()), 'the dashboard log line', s.exited);
    const health = await (await fetch(`${m[1]}/health.json`)).text();
    expect(JSON.parse(health).health.status).toBe('ok');
    expect(health).not.toContain(TOKEN);
    expect(s.stderr()).not.toContain(TOKEN);
    s.proc.stdin!.end(); // EOF: the Port drains and exits
    expect(await s.exited).toBe(0);
  }, 60_000);

  it('a Port sidecar told to serve the page on a public address without a token refuses to start', async () => {
    const s = run(['port'], { PROMPT_ENGINE_DASHBOARD: '0.0.0.0:4050' });
    expect(await s.exited).toBe(2);
    expect(s.stderr()).toMatch(/refusing to serve the dashboard on 0\.0\.0\.0/);
  }, 30_000);
});
