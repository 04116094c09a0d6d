/**
 * The dashboard's HTTP server: the pages (one HTML shell, drawn in the
 * browser from each page's JSON), the JSON beside each page, a server-sent
 * event stream per page for live updates, the shipped assets, and the
 * operator actions (pin / unpin / stop / resume / reset, through the
 * `experiment` op). It calls the op table like the Port and NATS transports
 * do and knows nothing of what the ops do.
 *
 * HTTP from Node's own `http` module: nine routes, GET and two POSTs, no
 * templating on the server (the shell carries no data), so a framework
 * would add a dependency and nothing we use. Charts are uPlot (the `uplot`
 * package, ~50 KB, no dependencies, canvas, fast on thousands of points),
 * served from node_modules: every asset ships in the package, no CDN.
 *
 * Live updates: one poller per page being watched (not per viewer) asks
 * the ops every `refreshMs` after the previous answer came back, and sends
 * the page's JSON to its streams only when it changed; nothing runs when
 * no page is open. Limits: `maxStreams` open streams (then 503), a
 * stream's unread backlog (`maxStreamBacklog`, then it is disconnected: a
 * viewer that stopped reading is not buffered without end), request
 * bodies of 16 KiB (then 413).
 *
 * Safety (security.ts): loopback bind by default, a non-loopback bind
 * without a token refused at start; the Host header checked on loopback
 * binds; reads on a non-loopback bind need the token (once, then a cookie);
 * actions need the token in a header or form field and a same-origin
 * request; a strict Content-Security-Policy (scripts from this server only,
 * no inline script), and the page writes every text as text, never markup.
 */
import fs from 'node:fs';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { REPO_ROOT, type HttpAddress } from '../config.js';
import { fromJson, termToJson, type Json } from '../codec/json.js';
import { record, type TermObject } from '../codec/terms.js';
import type { OpTable } from '../ops/index.js';
import type { AppEngine } from '../services.js';
import { PAGE_NAMES, PAGE_PARAMS, Pages, type OpCall, type PageName } from './pages.js';
import { crossSite, hostAllowed, isLoopbackHost, READ_COOKIE, startRefusal, TokenCheck, TOKEN_HEADER } from './security.js';
import { DASHBOARD_CSS, shellHtml } from './shell.js';

export interface DashboardOptions {
  address: HttpAddress;
  /** The operator token; without one the page is read-only. */
  token?: string;
  call: OpCall;
  log: Logger;
  /** How often a watched page asks the ops again, after the previous answer (default 1000 ms; 5000 for prompts and models). */
  refreshMs?: number;
  /** Open live streams at most (default 64). */
  maxStreams?: number;
  /** Bytes a live stream may leave unread before it is disconnected (default 1 MiB). */
  maxStreamBacklog?: number;
}

const DEFAULT_STREAM_BACKLOG = 1024 * 1024;

export interface DashboardHandle {
  /** `http://host:port` (the real port when 0 was asked). */
  readonly url: string;
  figures(): TermObject;
  close(): Promise<void>;
}

const MAX_BODY = 16 * 1024;
const ACTIONS = new Set(['pin', 'unpin', 'reset', 'stop', 'resume']);

/** A refusal to start (a non-loopback bind without a token, a short token): the message says why. A port in use is a plain Error. */
export class DashboardRefused extends Error {
  override readonly name = 'DashboardRefused';
}

/** The op table as the dashboard calls it: each call a request of its own, transport 'dashboard'. */
export function opCaller(engine: AppEngine, table: OpTable): OpCall {
  return (op, args) => table.dispatch(op, fromJson(args), { signal: new AbortController().signal, engine, log: engine.log, transport: 'dashboard' });
}

/** Start the dashboard for an engine's op table and report its figures in `stats` (never the token). */
export async function startEngineDashboard(engine: AppEngine, table: OpTable, address: HttpAddress, token: string | undefined): Promise<DashboardHandle> {
  const d = await startDashboard({ address, token, call: opCaller(engine, table), log: engine.log.child({ transport: 'dashboard' }) });
  engine.registerFigures('dashboard', () => d.figures());
  return d;
}

export async function startDashboard(opts: DashboardOptions): Promise<DashboardHandle> {
  const refusal = startRefusal(opts.address, opts.token);
  if (refusal !== undefined) throw new DashboardRefused(refusal);
  const server = new DashboardServer(opts);
  await server.listen();
  return server;
}

interface Poller {
  key: string;
  page: PageName;
  params: URLSearchParams;
  streams: Set<ServerResponse>;
  last: string | undefined;
  timer: NodeJS.Timeout | undefined;
  running: boolean;
}

class DashboardServer implements DashboardHandle {
  private readonly server: http.Server;
  private readonly tokens: TokenCheck;
  private readonly pages: Pages;
  private readonly pollers = new Map<string, Poller>();
  private readonly assets: Map<string, { file: string; type: string }>;
  private readonly counts = { requests: 0, json: 0, actions: 0, refused: 0, streams_opened: 0, streams_dropped: 0 };
  private streamCount = 0;
  private closed = false;
  url = '';

  constructor(private readonly opts: DashboardOptions) {
    this.tokens = new TokenCheck(opts.token);
    this.pages = new Pages(opts.call, this.tokens.configured);
    this.assets = assetFiles();
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        opts.log.error({ err: (err as Error).message, path: pathOf(req) }, 'dashboard request failed');
        if (!res.headersSent) sendJson(res, 500, { error: { reason: 'internal', message: (err as Error).message } });
        else res.end();
      });
    });
    this.server.headersTimeout = 10_000;
    this.server.requestTimeout = 30_000;
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(new Error(`dashboard: cannot listen on ${this.opts.address.host}:${this.opts.address.port}: ${err.message}`));
      this.server.once('error', onError);
      this.server.listen(this.opts.address.port, this.opts.address.host, () => {
        this.server.off('error', onError);
        const a = this.server.address() as AddressInfo;
        const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
        this.url = `http://${host}:${a.port}`;
        this.opts.log.info({ url: this.url, actions: this.tokens.configured ? 'token' : 'read-only' }, 'dashboard serving');
        resolve();
      });
    });
  }

  figures(): TermObject {
    return record({ url: this.url, streams: this.streamCount, pages_watched: this.pollers.size, actions_enabled: this.tokens.configured, ...this.counts });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.counts.requests++;
    setCommonHeaders(res);
    if (!hostAllowed(req, this.opts.address)) {
      this.counts.refused++;
      return sendJson(res, 403, { error: { reason: 'forbidden', message: `Host ${JSON.stringify(req.headers.host ?? '')} is not this dashboard's loopback address` } });
    }
    const url = new URL(req.url ?? '/', 'http://dashboard.invalid');
    const p = url.pathname;
    if (req.method === 'POST' && p === '/action') return this.action(req, res);
    if (req.method === 'POST' && p === '/login') return this.login(req, res);
    if (req.method !== 'GET' && req.method !== 'HEAD') return sendJson(res, 405, { error: { reason: 'bad_request', message: `${String(req.method)} is not served here` } });
    if (p === '/') {
      res.writeHead(302, { location: '/experiments' }).end();
      return;
    }
    if (p.startsWith('/assets/')) return this.asset(p.slice('/assets/'.length), res);
    if (p === '/favicon.ico') {
      res.writeHead(204).end();
      return;
    }
    const m = /^\/([a-z]+)(\.json|\.events)?$/.exec(p);
    const page = m?.[1] as PageName | undefined;
    if (m === null || page === undefined || !(PAGE_NAMES as readonly string[]).includes(page)) return sendJson(res, 404, { error: { reason: 'not_found', message: `no page ${JSON.stringify(p)}; pages: ${PAGE_NAMES.map((n) => `/${n}`).join(', ')}` } });
    if (m[2] === undefined) {
      // The shell carries no data (and so needs no token): the page asks for its JSON.
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(shellHtml());
      return;
    }
    if (!this.mayRead(req)) {
      this.counts.refused++;
      return sendJson(res, 401, { error: { reason: 'unauthorized', message: 'this dashboard is not on loopback: give the operator token first' } });
    }
    if (m[2] === '.json') {
      this.counts.json++;
      const r = await this.pages.page(page, url.searchParams);
      return sendJson(res, r.status, r.data);
    }
    return this.stream(page, url.searchParams, res);
  }

  /** Reads are open on loopback; elsewhere they need the token (header) or the cookie `/login` sets. */
  private mayRead(req: IncomingMessage): boolean {
    if (isLoopbackHost(this.opts.address.host)) return true;
    return this.tokens.matches(headerOf(req, TOKEN_HEADER)) || this.tokens.cookieMatches(req);
  }

  private asset(name: string, res: ServerResponse): void {
    if (name === 'dashboard.css') {
      res.writeHead(200, { 'content-type': 'text/css; charset=utf-8', 'cache-control': 'no-cache' }).end(DASHBOARD_CSS);
      return;
    }
    const a = this.assets.get(name);
    if (a === undefined || !fs.existsSync(a.file)) return sendJson(res, 404, { error: { reason: 'not_found', message: `no asset ${JSON.stringify(name)}${a === undefined ? '' : ' (run npm run build)'}` } });
    res.writeHead(200, { 'content-type': a.type, 'cache-control': 'no-cache' });
    fs.createReadStream(a.file).pipe(res);
  }

  private stream(page: PageName, params: URLSearchParams, res: ServerResponse): void {
    const max = this.opts.maxStreams ?? 64;
    if (this.streamCount >= max) return sendJson(res, 503, { error: { reason: 'overloaded', message: `more than ${max} live pages open; close one (or reload later)` } });
    // Keyed by what the page reads only: a parameter it ignores does not start a poller of its own.
    const read = new URLSearchParams([...params.entries()].filter(([k]) => PAGE_PARAMS[page].includes(k)).sort());
    const key = `${page}?${read.toString()}`;
    let poller = this.pollers.get(key);
    if (poller === undefined) {
      poller = { key, page, params: read, streams: new Set(), last: undefined, timer: undefined, running: false };
      this.pollers.set(key, poller);
    }
    this.streamCount++;
    this.counts.streams_opened++;
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    res.write('retry: 2000\n\n');
    poller.streams.add(res);
    if (poller.last !== undefined) this.send(res, `data: ${poller.last}\n\n`);
    const heartbeat = setInterval(() => this.send(res, ': keep-alive\n\n'), 15_000);
    const p = poller;
    // The response's close: the viewer went away (or the server is closing).
    res.on('close', () => {
      clearInterval(heartbeat);
      if (!p.streams.delete(res)) return;
      this.streamCount--;
      if (p.streams.size === 0) {
        clearTimeout(p.timer);
        this.pollers.delete(p.key);
      }
    });
    if (!p.running && p.timer === undefined) void this.poll(p);
  }

  /**
   * One event to a viewer; a viewer that has not read what was sent before
   * (more than `maxStreamBacklog` bytes wait: it stopped reading, or reads
   * slower than the page changes) is disconnected instead of buffered
   * without end. EventSource reconnects by itself and gets the page anew.
   */
  private send(res: ServerResponse, event: string): void {
    if (res.writableLength > (this.opts.maxStreamBacklog ?? DEFAULT_STREAM_BACKLOG)) {
      this.counts.streams_dropped++;
      res.destroy();
      return;
    }
    res.write(event);
  }

  private async poll(p: Poller): Promise<void> {
    p.timer = undefined;
    if (this.closed || p.streams.size === 0) return;
    p.running = true;
    try {
      const r = await this.pages.page(p.page, p.params);
      // generated_at changes every time: compare without it.
      const text = JSON.stringify(r.data);
      const same = p.last !== undefined && withoutStamp(p.last) === withoutStamp(text);
      if (!same) {
        p.last = text;
        for (const s of p.streams) this.send(s, `data: ${text}\n\n`);
      }
    } catch (err) {
      this.opts.log.warn({ err: (err as Error).message, page: p.page }, 'dashboard live update failed');
    } finally {
      p.running = false;
    }
    if (this.closed || p.streams.size === 0) return;
    const every = this.opts.refreshMs ?? (p.page === 'prompts' || p.page === 'models' ? 5000 : 1000);
    p.timer = setTimeout(() => void this.poll(p), every);
  }

  private async action(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.counts.actions++;
    const refuse = (status: number, reason: string, message: string): void => {
      this.counts.refused++;
      sendJson(res, status, { error: { reason, message } });
    };
    if (!this.tokens.configured) return refuse(403, 'forbidden', 'this dashboard is read-only: it was started without an operator token (PROMPT_ENGINE_DASHBOARD_TOKEN)');
    const cross = crossSite(req);
    if (cross !== undefined) return refuse(403, 'forbidden', cross);
    const body = await readBody(req, res);
    if (body === undefined) return;
    const token = headerOf(req, TOKEN_HEADER) ?? (typeof body.token === 'string' ? body.token : undefined);
    if (!this.tokens.matches(token)) return refuse(401, 'unauthorized', `an operator action needs the dashboard's token (header ${TOKEN_HEADER} or form field token)`);
    const action = body.action;
    if (typeof action !== 'string' || !ACTIONS.has(action)) return refuse(400, 'bad_request', `action: expected one of ${[...ACTIONS].join(', ')}`);
    const args: { [k: string]: Json } = { action };
    for (const k of ['experiment', 'model', 'prompt_id'] as const) if (typeof body[k] === 'string' && body[k] !== '') args[k] = body[k];
    // Pinning a variant the loop retired or banned is refused unless the operator says so.
    if (body.force === true || body.force === 'true') args.force = true;
    const r = await this.opts.call('experiment', args);
    // Who did what, without the token and without prompt text.
    this.opts.log.info({ action, experiment: args.experiment, model: args.model, prompt_id: args.prompt_id, ok: r.ok }, 'dashboard operator action');
    if (!r.ok) return sendJson(res, ({ not_found: 404, bad_request: 400, conflict: 409 } as Record<string, number>)[r.reason] ?? 503, { error: { reason: r.reason, message: r.message } });
    // Watchers of this experiment see the change at once, not at the next tick.
    for (const p of this.pollers.values()) if (!p.running && p.timer !== undefined) {
      clearTimeout(p.timer);
      void this.poll(p);
    }
    sendJson(res, 200, { ok: termToJson(r.value) });
  }

  /** Trade the token for a read cookie (non-loopback binds: EventSource cannot send a header). */
  private async login(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const cross = crossSite(req);
    if (cross !== undefined) return sendJson(res, 403, { error: { reason: 'forbidden', message: cross } });
    const body = await readBody(req, res);
    if (body === undefined) return;
    const token = headerOf(req, TOKEN_HEADER) ?? (typeof body.token === 'string' ? body.token : undefined);
    if (!this.tokens.matches(token)) {
      this.counts.refused++;
      return sendJson(res, 401, { error: { reason: 'unauthorized', message: 'wrong or missing token' } });
    }
    res.setHeader('set-cookie', `${READ_COOKIE}=${this.tokens.cookieValue!}; HttpOnly; SameSite=Strict; Path=/`);
    sendJson(res, 200, { ok: true });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.pollers.values()) {
      clearTimeout(p.timer);
      for (const s of p.streams) s.end();
    }
    this.pollers.clear();
    await new Promise<void>((r) => {
      this.server.close(() => r());
      this.server.closeAllConnections();
    });
  }
}

function withoutStamp(text: string): string {
  return text.replace(/"generated_at":"[^"]*"/, '');
}

function pathOf(req: IncomingMessage): string {
  return (req.url ?? '/').split('?')[0]!;
}

function headerOf(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function setCommonHeaders(res: ServerResponse): void {
  res.setHeader('content-security-policy', "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'");
  res.setHeader('x-content-type-options', 'nosniff');
  res.setHeader('referrer-policy', 'no-referrer');
  res.setHeader('x-frame-options', 'DENY');
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' }).end(JSON.stringify(body));
}

/** A JSON or form body of at most 16 KiB as a flat map; undefined when an error was sent. */
async function readBody(req: IncomingMessage, res: ServerResponse): Promise<Record<string, unknown> | undefined> {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/json' && type !== 'application/x-www-form-urlencoded') {
    sendJson(res, 415, { error: { reason: 'bad_request', message: 'expected a body of type application/json or application/x-www-form-urlencoded' } });
    return undefined;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > MAX_BODY) {
      sendJson(res, 413, { error: { reason: 'bad_request', message: `body: at most ${MAX_BODY} bytes` } });
      req.destroy();
      return undefined;
    }
    chunks.push(c);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (type === 'application/x-www-form-urlencoded') return Object.fromEntries(new URLSearchParams(text));
  try {
    const v = JSON.parse(text === '' ? '{}' : text) as unknown;
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not an object');
    return v as Record<string, unknown>;
  } catch (err) {
    sendJson(res, 400, { error: { reason: 'bad_request', message: `body: expected a JSON object (${(err as Error).message})` } });
    return undefined;
  }
}

/**
 * The files under /assets/: the page's script (compiled from client/app.ts by
 * `npm run build`, found beside this module in dist/, or in dist/ when this
 * module runs from source under the tests) and uPlot from node_modules.
 */
function assetFiles(): Map<string, { file: string; type: string }> {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const compiled = [path.join(here, 'client', 'app.js'), path.join(REPO_ROOT, 'dist', 'src', 'dashboard', 'client', 'app.js')];
  const app = compiled.find((f) => fs.existsSync(f)) ?? compiled[0]!;
  const uplot = path.dirname(createRequire(import.meta.url).resolve('uplot'));
  return new Map([
    ['app.js', { file: app, type: 'text/javascript; charset=utf-8' }],
    ['uPlot.iife.min.js', { file: path.join(uplot, 'uPlot.iife.min.js'), type: 'text/javascript; charset=utf-8' }],
    ['uPlot.min.css', { file: path.join(uplot, 'uPlot.min.css'), type: 'text/css; charset=utf-8' }],
  ]);
}

