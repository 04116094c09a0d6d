/**
 * The dashboard's page script (runs in the browser; compiled by
 * tsconfig.client.json into dist/, served as /assets/app.js). It reads the
 * page from the address, fetches the page's JSON, draws it, and redraws it
 * from the page's event stream (server-sent events) without a reload.
 *
 * Every text from the server (prompt texts, names, comments: user input) is
 * written with `textContent` / text nodes through `h()`, never as markup;
 * attributes are only ones this script names, with values it builds. The
 * server's Content-Security-Policy allows no inline script besides.
 *
 * Charts over outcomes come from the experiment's `history` when the op
 * gives it; otherwise from the points this page receives while it is open
 * (each update is one point; leader changes, retirements and bans are seen
 * as changes between two updates).
 */
import type UPlotT from 'uplot';

declare const uPlot: typeof UPlotT;

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Obj = { [k: string]: Json };

const obj = (v: Json | undefined): Obj => (v !== null && typeof v === 'object' && !Array.isArray(v) ? v : {});
const arr = (v: Json | undefined): Json[] => (Array.isArray(v) ? v : []);
const num = (v: Json | undefined): number => (typeof v === 'number' ? v : 0);
const text = (v: Json | undefined): string => (v === null || v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v));

// ---------------------------------------------------------------- DOM helpers

type Child = Node | string | number | null | undefined | false;
type Attrs = { [k: string]: string | number | boolean | undefined };

/** An element with attributes and children; strings become text nodes (never markup). */
function h(tag: string, attrs: Attrs = {}, ...children: Child[]): HTMLElement {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (/^on/i.test(k)) throw new Error(`event attributes are not written: ${k}`);
    el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(typeof c === 'object' ? c : document.createTextNode(String(c)));
  return el;
}

const pct = (x: Json | undefined, digits = 1): string => (typeof x === 'number' ? `${(x * 100).toFixed(digits)}%` : '–');
const ci = (iv: Json | undefined): string => {
  const a = arr(iv);
  return a.length === 2 ? `[${pct(a[0], 0)}, ${pct(a[1], 0)}]` : '';
};
function rateCell(m: Obj): HTMLElement {
  return h('td', { class: 'num' }, num(m.count) > 0 ? pct(m.success_rate) : '–', ' ', h('span', { class: 'ci' }, ci(m.interval)), h('div', { class: 'ci' }, `${num(m.successes)}/${num(m.count)}`));
}
function points(x: Json | undefined): string {
  if (typeof x !== 'number') return '–';
  const s = (x * 100).toFixed(1);
  return `${x >= 0 ? '+' : ''}${s} pt`;
}
const link = (page: string, params: Record<string, string>): string => `/${page}?${new URLSearchParams(params).toString()}`;
const ago = (iso: Json | undefined): string => {
  if (typeof iso !== 'string') return '';
  const s = (Date.now() - Date.parse(iso)) / 1000;
  if (!Number.isFinite(s)) return iso;
  return s < 90 ? `${Math.max(0, Math.round(s))} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago` : s < 129600 ? `${Math.round(s / 3600)} h ago` : iso.slice(0, 10);
};

function table(head: Array<string | [string, string]>, rows: HTMLElement[]): HTMLElement {
  const thead = h('thead', {}, h('tr', {}, ...head.map((c) => (Array.isArray(c) ? h('th', { class: c[1] }, c[0]) : h('th', {}, c)))));
  const tbody = h('tbody');
  const frag = document.createDocumentFragment();
  for (const r of rows) frag.append(r);
  tbody.append(frag);
  return h('table', {}, thead, tbody);
}

function card(k: string, v: Child, extra?: Child): HTMLElement {
  return h('div', { class: 'card' }, h('div', { class: 'k' }, k), h('div', { class: 'v' }, v), extra === undefined ? null : h('div', { class: 'ci' }, extra));
}

/** A small line chart as SVG (cheap enough for a thousand rows). */
function sparkline(ys: number[], w = 120, hgt = 28): Element {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('width', String(w));
  svg.setAttribute('height', String(hgt));
  svg.setAttribute('viewBox', `0 0 ${w} ${hgt}`);
  if (ys.length >= 2) {
    const path = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
    const pts = ys.map((y, i) => `${((i / (ys.length - 1)) * (w - 2) + 1).toFixed(1)},${(hgt - 1 - Math.max(0, Math.min(1, y)) * (hgt - 2)).toFixed(1)}`);
    path.setAttribute('points', pts.join(' '));
    path.setAttribute('fill', 'none');
    path.setAttribute('stroke', '#2f6fdb');
    path.setAttribute('stroke-width', '1.5');
    svg.append(path);
  }
  return svg;
}

const PALETTE = ['#2f6fdb', '#1f8a4c', '#c0392b', '#b7791f', '#7b4fc9', '#138d90', '#d35400', '#5d6d7e', '#e84393', '#16a085'];

interface Mark {
  x: number;
  kind: string;
}

/**
 * The charts on the page now. A redraw destroys them first: uPlot keeps each
 * chart reachable (a window listener, its cursor sync) until `destroy()`, so
 * charts only taken out of the page would pile up in an open tab.
 */
const drawn: UPlotT[] = [];

/** A uPlot line chart in `parent`, with vertical marks (leader changes, retirements, bans). */
function lineChart(parent: HTMLElement, title: string, xLabel: string, series: Array<{ label: string; ys: Array<number | null> }>, xs: number[], opts: { marks?: Mark[]; yMax?: number; time?: boolean; width?: number } = {}): void {
  const box = h('div', { class: 'chart', 'data-chart': title }, h('div', { class: 'title' }, title));
  parent.append(box);
  if (xs.length < 2) {
    box.append(h('div', { class: 'muted small' }, 'not enough points yet: the chart fills in as outcomes arrive'));
    return;
  }
  const markColor: Record<string, string> = { leader: '#1f8a4c', retired: '#9aa0ac', banned: '#c0392b', admitted: '#2f6fdb' };
  const marks = opts.marks ?? [];
  const chart = new uPlot(
    {
      width: opts.width ?? 560,
      height: 220,
      scales: { x: { time: opts.time === true }, y: { range: opts.yMax === undefined ? undefined : [0, opts.yMax] } },
      axes: [{ label: xLabel }, {}],
      series: [{ label: xLabel }, ...series.map((s, i) => ({ label: s.label, stroke: PALETTE[i % PALETTE.length]!, width: 1.5, spanGaps: true }))],
      legend: { show: series.length <= 12 },
      hooks: {
        draw: [
          (u: UPlotT) => {
            const ctx = u.ctx;
            ctx.save();
            for (const m of marks) {
              const x = Math.round(u.valToPos(m.x, 'x', true));
              ctx.strokeStyle = markColor[m.kind] ?? '#999';
              ctx.setLineDash(m.kind === 'leader' ? [] : [4, 3]);
              ctx.lineWidth = 1;
              ctx.beginPath();
              ctx.moveTo(x, u.bbox.top);
              ctx.lineTo(x, u.bbox.top + u.bbox.height);
              ctx.stroke();
            }
            ctx.restore();
          },
        ],
      },
    },
    [xs, ...series.map((s) => s.ys)] as UPlotT.AlignedData,
    box,
  );
  drawn.push(chart);
  document.body.dataset.liveCharts = String(drawn.length);
  if (marks.length > 0) {
    const counts = new Map<string, number>();
    for (const m of marks) counts.set(m.kind, (counts.get(m.kind) ?? 0) + 1);
    box.append(h('div', { class: 'ci' }, `marks: ${[...counts].map(([k, n]) => `${k === 'leader' ? 'leader change (solid green)' : k === 'banned' ? 'ban (dashed red)' : k === 'retired' ? 'retirement (dashed grey)' : k} × ${n}`).join(', ')}`));
  }
}

// ---------------------------------------------------------------- token, actions

const TOKEN_KEY = 'prompt-engine-dashboard-token';
const token = (): string => sessionStorage.getItem(TOKEN_KEY) ?? '';

async function act(body: Obj): Promise<void> {
  const out = document.getElementById('action-result');
  const r = await fetch('/action', { method: 'POST', headers: { 'content-type': 'application/json', 'x-prompt-engine-token': token() }, body: JSON.stringify(body) });
  const j = obj((await r.json().catch(() => ({}))) as Json);
  const msg = r.ok ? `${text(body.action)}: done` : `${text(body.action)} refused (${r.status}): ${text(obj(j.error).message)}`;
  if (out !== null) {
    out.textContent = msg;
    out.className = r.ok ? 'pos' : 'neg';
  }
  document.body.dataset.lastAction = r.ok ? 'ok' : String(r.status);
  if (r.ok) void load();
}

function actionButton(label: string, body: Obj, enabled: boolean): HTMLElement {
  const b = h('button', { class: 'act', type: 'button', 'data-action': text(body.action), 'data-prompt-id': typeof body.prompt_id === 'string' ? body.prompt_id : undefined, title: enabled ? undefined : 'read-only: the dashboard has no operator token' }, label);
  b.addEventListener('click', () => void act(body));
  return b;
}

// ---------------------------------------------------------------- live state

/** Points seen live, per experiment, when the op gives no history. */
interface LivePoint {
  outcomes: number;
  successes: number;
  counts: Record<string, number>;
  leader: string;
  states: Record<string, string>;
}
const live = new Map<string, LivePoint[]>();
/** Brief list: (outcomes, leader rate) per experiment, and when each changed. */
const liveBrief = new Map<string, { outcomes: number; leaderRate: number; leader: string; seenChange: string | null }[]>();

function remember<T>(m: Map<string, T[]>, key: string, p: T, same: (a: T, b: T) => boolean, max = 2000): T[] {
  let xs = m.get(key);
  if (xs === undefined) m.set(key, (xs = []));
  const last = xs[xs.length - 1];
  if (last === undefined || !same(last, p)) xs.push(p);
  if (xs.length > max) xs.splice(0, xs.length - max);
  return xs;
}

// ---------------------------------------------------------------- pages

function errorsBox(d: Obj): HTMLElement | null {
  const errs = arr(d.errors).map(obj);
  if (errs.length === 0) return null;
  return h('div', { class: 'errors' }, ...errs.map((e) => h('div', {}, `${text(e.op)}: ${text(e.reason)}: ${text(e.message)}`)));
}

function renderExperiments(d: Obj): HTMLElement {
  const exps = arr(d.experiments).map(obj);
  const hist = d.history_supported === true;
  const rows = exps.map((e) => {
    const key = `${text(e.experiment)}\u0000${text(e.model)}`;
    const leader = obj(e.leader);
    const base = obj(e.base);
    let ys: number[];
    let change: string;
    if (hist) {
      const buckets = arr(e.history).map(obj);
      ys = [];
      for (let i = 0; i < buckets.length; i++) {
        const prev = i === 0 ? { outcomes: 0, successes: 0 } : buckets[i - 1]!;
        const dn = num(buckets[i]!.outcomes) - num(prev.outcomes as Json);
        if (dn > 0) ys.push((num(buckets[i]!.successes) - num(prev.successes as Json)) / dn);
      }
      const lc = obj(e.last_change);
      change = lc.at === undefined ? '' : `${text(lc.kind)} ${ago(lc.at)}`;
    } else {
      const seen = remember(liveBrief, key, { outcomes: num(e.outcomes), leaderRate: num(leader.success_rate), leader: text(leader.prompt_id), seenChange: null }, (a, b) => a.outcomes === b.outcomes);
      ys = seen.map((p) => p.leaderRate);
      const last = seen[seen.length - 1]!;
      const prev = seen[seen.length - 2];
      if (prev !== undefined && prev.leader !== last.leader) last.seenChange = new Date().toISOString();
      const c = [...seen].reverse().find((p) => p.seenChange !== null);
      change = c === undefined ? '' : `leader ${ago(c.seenChange)}`;
    }
    const imp = num(e.improvement);
    return h(
      'tr',
      { 'data-experiment': text(e.experiment), 'data-model': text(e.model) },
      h('td', {}, h('a', { href: link('experiment', { name: text(e.experiment), model: text(e.model) }) }, text(e.experiment))),
      h('td', {}, text(e.model)),
      h('td', { class: 'num' }, text(e.generation)),
      h('td', { class: `status-${text(e.status)}` }, text(e.status), e.pinned ? h('span', { class: 'badge pinned' }, ' pinned') : null),
      h('td', { class: 'num', 'data-col': 'outcomes' }, text(e.outcomes)),
      rateCell(base),
      rateCell(leader),
      h('td', { class: `num ${imp > 0 ? 'pos' : imp < 0 ? 'neg' : ''}` }, points(e.improvement)),
      h('td', {}, sparkline(ys)),
      h('td', { class: 'small muted' }, change),
    );
  });
  return h(
    'section',
    {},
    h('h1', {}, `Experiments (${exps.length})`),
    errorsBox(d),
    hist ? null : h('div', { class: 'notice' }, 'The experiment op gives no history here: each small chart is the leader\'s success rate at each update this page received since it opened.'),
    table(['experiment', 'model', ['gen', 'num'], 'status', ['outcomes', 'num'], ['base [95% CI]', 'num'], ['leader [95% CI]', 'num'], ['improvement', 'num'], hist ? 'success rate served over outcomes' : 'leader success rate (live)', 'last change'], rows),
  );
}

function renderExperiment(d: Obj): HTMLElement {
  const e = obj(d.experiment);
  if (d.error !== undefined && d.error !== null) {
    const err = obj(d.error);
    const models = arr(d.models);
    return h(
      'section',
      {},
      h('h1', {}, text(d.experiment) || 'Experiment'),
      h('div', { class: 'errors' }, `${text(err.reason)}: ${text(err.message)}`),
      models.length > 0 ? h('ul', {}, ...models.map((m) => h('li', {}, h('a', { href: link('experiment', { name: text(d.experiment), model: text(m) }) }, text(m))))) : null,
    );
  }
  const name = text(e.experiment);
  const model = text(e.model);
  const enabled = d.actions_enabled === true;
  const variants = arr(e.variants).map(obj);
  const leader = obj(e.leader);
  const base = obj(e.base);
  const leaderId = text(leader.prompt_id);
  const short = (id: string): string => (id.length > 14 ? `${id.slice(0, 12)}…` : id);

  // Chart data: from history, else from the points seen live.
  let xs: number[] = [];
  let served: Array<number | null> = [];
  let cumulative: Array<number | null> = [];
  const shares = new Map<string, Array<number | null>>();
  const marks: Mark[] = [];
  if (d.history_supported === true) {
    const buckets = arr(e.history).map(obj);
    let prevO = 0;
    let prevS = 0;
    for (const b of buckets) {
      const o = num(b.outcomes);
      const s = num(b.successes);
      const counts = obj(b.variants);
      const total = Object.values(counts).reduce<number>((t, c) => t + num(c), 0);
      xs.push(o);
      served.push(o > prevO ? (s - prevS) / (o - prevO) : null);
      cumulative.push(o > 0 ? s / o : null);
      for (const v of variants) {
        const id = text(v.prompt_id);
        const list = shares.get(id) ?? (shares.set(id, new Array<number | null>(xs.length - 1).fill(0)), shares.get(id)!);
        list.push(total > 0 ? num(counts[id]) / total : 0);
      }
      prevO = o;
      prevS = s;
    }
    for (const ev of arr(e.events).map(obj)) if (ev.kind !== 'admitted') marks.push({ x: num(ev.outcomes), kind: text(ev.kind) });
  } else {
    const point: LivePoint = {
      outcomes: num(e.outcomes),
      successes: variants.reduce((t, v) => t + num(v.successes), 0),
      counts: Object.fromEntries(variants.map((v) => [text(v.prompt_id), num(v.count)])),
      leader: leaderId,
      states: Object.fromEntries(variants.map((v) => [text(v.prompt_id), text(v.state)])),
    };
    const key = `${name}\u0000${model}`;
    // The first point is the experiment's start: the first interval is everything before this page opened.
    if (!live.has(key)) live.set(key, [{ outcomes: 0, successes: 0, counts: {}, leader: point.leader, states: point.states }]);
    const seen = remember(live, key, point, (a, b) => a.outcomes === b.outcomes && a.leader === b.leader);
    for (let i = 1; i < seen.length; i++) {
      const a = seen[i - 1]!;
      const b = seen[i]!;
      const dn = b.outcomes - a.outcomes;
      xs.push(b.outcomes);
      served.push(dn > 0 ? (b.successes - a.successes) / dn : null);
      cumulative.push(b.outcomes > 0 ? b.successes / b.outcomes : null);
      const total = Object.keys(b.counts).reduce((t, id) => t + Math.max(0, (b.counts[id] ?? 0) - (a.counts[id] ?? 0)), 0);
      for (const v of variants) {
        const id = text(v.prompt_id);
        const list = shares.get(id) ?? (shares.set(id, new Array<number | null>(xs.length - 1).fill(null)), shares.get(id)!);
        list.push(total > 0 ? Math.max(0, (b.counts[id] ?? 0) - (a.counts[id] ?? 0)) / total : null);
      }
      if (a.leader !== b.leader) marks.push({ x: b.outcomes, kind: 'leader' });
      for (const [id, st] of Object.entries(b.states)) if (a.states[id] === 'active' && (st === 'retired' || st === 'banned')) marks.push({ x: b.outcomes, kind: st });
    }
  }
  // Each variant's share: only variants that were ever served in the window, most served first (at most 10 lines).
  const shareSeries = [...shares.entries()]
    .map(([id, ys]) => ({ id, ys, total: ys.reduce<number>((t, y) => t + (y ?? 0), 0) }))
    .filter((s) => s.total > 0)
    .sort((a, b) => b.total - a.total)
    .slice(0, 10);

  const charts = h('div', { class: 'charts' });
  const lastChange = obj(e.last_change);
  const section = h(
    'section',
    {},
    h('h1', {}, `${name} `, h('span', { class: 'muted' }, `· ${model}`)),
    errorsBox(d),
    h(
      'div',
      { class: 'cards' },
      card('status', h('span', { class: `status-${text(e.status)}` }, text(e.status)), e.pinned ? `pinned ${short(text(e.pinned))}` : undefined),
      card('generation', text(e.generation)),
      card('outcomes', h('span', { 'data-field': 'outcomes' }, text(e.outcomes))),
      card('base', num(base.count) > 0 ? pct(base.success_rate) : '–', `${ci(base.interval)} ${num(base.successes)}/${num(base.count)}`),
      card('leader', h('span', { 'data-field': 'leader' }, short(leaderId)), `${pct(leader.success_rate)} ${ci(leader.interval)} ${num(leader.successes)}/${num(leader.count)}`),
      card('measured improvement', points(e.improvement)),
      card('proposals made', text(e.proposals_made)),
      card('last change', lastChange.at === undefined ? '–' : text(lastChange.kind), lastChange.at === undefined ? undefined : ago(lastChange.at)),
    ),
    h(
      'div',
      {},
      actionButton('stop', { experiment: name, model, action: 'stop' }, enabled),
      actionButton('resume', { experiment: name, model, action: 'resume' }, enabled),
      actionButton('unpin', { experiment: name, model, action: 'unpin' }, enabled),
      actionButton('reset to base', { experiment: name, model, action: 'reset' }, enabled),
      h('span', { class: 'muted small' }, enabled ? ' operator actions need the token (box at the top)' : ' read-only: this dashboard was started without an operator token'),
      h('div', { id: 'action-result' }),
    ),
    d.history_supported === true ? null : h('div', { class: 'notice' }, 'The experiment op gives no history here: the charts are drawn from the updates this page received since it opened (one point per update).'),
    charts,
  );
  lineChart(charts, 'success rate served over outcomes (per interval, and cumulative)', 'outcomes', [{ label: 'served (interval)', ys: served }, { label: 'served (cumulative)', ys: cumulative }], xs, { marks, yMax: 1 });
  lineChart(charts, "each variant's share of traffic over outcomes", 'outcomes', shareSeries.map((s) => ({ label: short(s.id), ys: s.ys })), xs, { marks, yMax: 1 });

  const rows = variants
    .slice()
    .sort((a, b) => num(b.count) - num(a.count))
    .map((v) => {
      const id = text(v.prompt_id);
      const isPinned = text(e.pinned) === id;
      return h(
        'tr',
        { 'data-variant': id },
        h('td', { class: 'small' }, short(id), id === leaderId ? h('div', {}, h('span', { class: 'badge leader' }, 'leader')) : null, isPinned ? h('div', {}, h('span', { class: 'badge pinned' }, 'pinned')) : null),
        h('td', {}, h('div', { class: 'prompt' }, text(v.text))),
        h('td', {}, text(v.origin)),
        h('td', { class: `state-${text(v.state)}` }, text(v.state)),
        h('td', { class: 'num' }, `${num(v.successes)}/${num(v.count)}`),
        h('td', { class: 'num' }, num(v.count) > 0 ? pct(v.success_rate) : '–', h('div', { class: 'ci' }, ci(v.interval))),
        h('td', { class: 'num' }, pct(v.posterior_mean)),
        h('td', { class: 'num' }, pct(v.p_best)),
        h('td', { class: 'num' }, v.predicted === null ? '–' : pct(v.predicted)),
        h(
          'td',
          {},
          isPinned
            ? actionButton('unpin', { experiment: name, model, action: 'unpin' }, enabled)
            : // The loop stopped serving a retired or banned variant: pinning it is the operator overruling it, said out loud.
              text(v.state) === 'retired' || text(v.state) === 'banned'
              ? actionButton('pin anyway', { experiment: name, model, action: 'pin', prompt_id: id, force: true }, enabled)
              : actionButton('pin', { experiment: name, model, action: 'pin', prompt_id: id }, enabled),
        ),
      );
    });
  section.append(h('h2', {}, `Variants (${variants.length})`), table(['prompt', 'text', 'origin', 'state', ['successes/count', 'num'], ['success rate [95% CI]', 'num'], ['posterior mean', 'num'], ['P(best)', 'num'], ["scorer's prior", 'num'], ''], rows));

  const evo = arr(d.evolutions).map(obj);
  section.append(
    h('h2', {}, `Leader changes: PromptEvolution entries (${evo.length})`),
    evo.length === 0
      ? h('p', { class: 'muted' }, 'none yet')
      : table(
          ['when', 'from', 'to', ['from rate', 'num'], ['to rate', 'num'], ['improvement', 'num']],
          evo.map((r) => {
            const m = obj(r.evolution_metadata);
            return h('tr', {}, h('td', { class: 'small' }, text(r.evolution_timestamp)), h('td', { class: 'small' }, short(text(r.original_prompt_id))), h('td', { class: 'small' }, short(text(r.evolved_prompt_id))), h('td', { class: 'num' }, `${pct(Number(m.from_rate))} (${text(m.from_count)})`), h('td', { class: 'num' }, `${pct(Number(m.to_rate))} (${text(m.to_count)})`), h('td', { class: 'num' }, points(r.performance_improvement)));
          }),
        ),
  );
  const ab = d.ab_results === null ? null : arr(d.ab_results).map(obj);
  section.append(
    h('h2', {}, 'Retirements and bans: ABTestResult entries'),
    ab === null
      ? h('p', { class: 'muted small' }, 'Recorded as ABTestResult entries in the store; shown here once the experiment op gives its events (no query kind reads those entries yet).')
      : ab.length === 0
        ? h('p', { class: 'muted' }, 'none yet')
        : table(['at', 'kind', 'prompt', ['outcomes', 'num']], ab.map((ev) => h('tr', {}, h('td', { class: 'small' }, text(ev.at)), h('td', { class: `state-${text(ev.kind)}` }, text(ev.kind)), h('td', { class: 'small' }, short(text(ev.prompt_id))), h('td', { class: 'num' }, text(ev.outcomes))))),
  );
  return section;
}

const promptHistory: Array<{ t: number; executions: number; rate: number }> = [];

function renderPrompts(d: Obj): HTMLElement {
  const totals = obj(d.totals);
  const last = promptHistory[promptHistory.length - 1];
  if (last === undefined || last.executions !== num(totals.executions)) promptHistory.push({ t: Date.parse(text(d.generated_at)) / 1000, executions: num(totals.executions), rate: num(totals.success_rate) });
  // At most as many points as every chart keeps (docs/dashboard.md, Limits).
  if (promptHistory.length > 2000) promptHistory.splice(0, promptHistory.length - 2000);
  const fb = obj(d.feedback);
  const ratings = obj(fb.ratings);
  const maxRating = Math.max(1, ...Object.values(ratings).map(num));
  const promptRows = (rows: Json[]): HTMLElement[] =>
    rows.map(obj).map((r) => h('tr', {}, h('td', { class: 'small' }, text(r.prompt_id)), h('td', { class: 'num' }, text(r.count)), h('td', { class: 'num' }, pct(r.success_rate), ' ', h('span', { class: 'ci' }, ci(r.interval))), h('td', { class: 'num' }, `${Math.round(num(r.p50_ms))} / ${Math.round(num(r.p95_ms))}`)));
  const charts = h('div', { class: 'charts' });
  const section = h(
    'section',
    {},
    h('h1', {}, 'Tracked prompts'),
    errorsBox(d),
    h('div', { class: 'cards' }, card('executions', h('span', { 'data-field': 'executions' }, text(totals.executions))), card('success rate', pct(totals.success_rate)), card('prompts', `${text(d.prompts)}${d.truncated === true ? '+' : ''}`), card('feedback (7 days)', text(fb.count), fb.mean_rating === null ? undefined : `mean rating ${num(fb.mean_rating).toFixed(2)}`)),
    h('div', { class: 'notice' }, 'Volume and success over time: one point per update this page received since it opened (the store keeps every execution; the query op gives totals).'),
    charts,
  );
  const xs = promptHistory.map((p) => p.t);
  lineChart(charts, 'executions tracked (total)', 'time', [{ label: 'executions', ys: promptHistory.map((p) => p.executions) }], xs, { time: true, width: 460 });
  lineChart(charts, 'success rate of every tracked execution', 'time', [{ label: 'success rate', ys: promptHistory.map((p) => p.rate) }], xs, { time: true, yMax: 1, width: 460 });
  const head: Array<string | [string, string]> = ['prompt', ['executions', 'num'], ['success rate [95% CI]', 'num'], ['p50 / p95 ms', 'num']];
  section.append(
    h('h2', {}, `Best prompts by success rate (at least ${text(d.min_count)} executions)`),
    table(head, promptRows(arr(d.best))),
    h('h2', {}, 'Worst prompts by success rate'),
    table(head, promptRows(arr(d.worst))),
    h('h2', {}, 'Feedback ratings (last 7 days)'),
    table(['rating', ['count', 'num'], ''], ['5', '4', '3', '2', '1'].map((k) => {
      const bar = h('span', { class: 'bar' });
      bar.style.width = `${Math.round((num(ratings[k]) / maxRating) * 200)}px`;
      return h('tr', {}, h('td', {}, k), h('td', { class: 'num' }, text(ratings[k])), h('td', {}, bar));
    })),
    h('h2', {}, 'Recent feedback'),
    table(['when', 'prompt', 'type', ['rating', 'num'], 'comment'], arr(fb.recent).map(obj).map((f) => h('tr', {}, h('td', { class: 'small' }, text(f.timestamp)), h('td', { class: 'small' }, text(f.prompt_id)), h('td', {}, text(f.feedback_type)), h('td', { class: 'num' }, text(f.rating)), h('td', {}, h('div', { class: 'prompt' }, text(f.comment)))))),
  );
  return section;
}

function renderModels(d: Obj): HTMLElement {
  const models = arr(d.models).map(obj);
  const promoted = arr(d.promoted).map(text);
  const serving = text(d.serving);
  const learner = obj(d.learner);
  const sidecar = obj(d.sidecar);
  const charts = h('div', { class: 'charts' });
  const byTime = models.slice().sort((a, b) => Date.parse(text(a.created_at)) - Date.parse(text(b.created_at)));
  const m = (x: Obj, k: string): number | null => (typeof obj(x.metrics)[k] === 'number' ? (obj(x.metrics)[k] as number) : null);
  const section = h(
    'section',
    {},
    h('h1', {}, 'Models'),
    errorsBox(d),
    h(
      'div',
      { class: 'cards' },
      card('served by this sidecar', h('span', { 'data-field': 'serving' }, serving), `os pid ${text(sidecar.os_pid)}`),
      card('latest promotion', promoted[0] ?? 'none (the shipped model)', 'served by every sidecar on this database within a second'),
      card('trainings', text(learner.trainings), `${text(learner.continuous)} continuous, ${text(learner.insufficient)} without enough data`),
      card('promotions', text(learner.promotions), learner.training === true ? 'training now' : undefined),
    ),
    learner.last_error ? h('div', { class: 'errors' }, `last training error: ${text(learner.last_error)}`) : null,
    charts,
  );
  lineChart(charts, 'retraining history: held-out AUC and log-loss of each trained model', 'trained at', [{ label: 'AUC', ys: byTime.map((x) => m(x, 'auc')) }, { label: 'log-loss', ys: byTime.map((x) => m(x, 'log_loss')) }], byTime.map((x) => Date.parse(text(x.created_at)) / 1000), { time: true });
  section.append(
    h('h2', {}, `Registry (${models.length})`),
    table(
      ['version', 'trained at', ['samples', 'num'], ['AUC', 'num'], ['log-loss', 'num'], ['accuracy', 'num'], ['ECE', 'num'], ['Spearman', 'num'], 'promoted', 'served here'],
      models.map((x) => {
        const f = (k: string): string => (m(x, k) === null ? '–' : m(x, k)!.toFixed(3));
        const rank = promoted.indexOf(text(x.version));
        return h('tr', { 'data-version': text(x.version) }, h('td', { class: 'small' }, text(x.version)), h('td', { class: 'small' }, text(x.created_at)), h('td', { class: 'num' }, text(x.samples)), h('td', { class: 'num' }, f('auc')), h('td', { class: 'num' }, f('log_loss')), h('td', { class: 'num' }, f('accuracy')), h('td', { class: 'num' }, f('ece')), h('td', { class: 'num' }, f('spearman')), h('td', {}, x.promoted === true ? (rank === 0 ? 'yes (latest)' : `yes (${rank + 1} promotions ago)`) : 'no'), h('td', {}, text(x.version) === serving ? '●' : ''));
      }),
    ),
  );
  return section;
}

/** A term map as rows of key → value (nested maps flattened with dots). */
function flatRows(o: Obj, prefix = ''): HTMLElement[] {
  return Object.entries(o).flatMap(([k, v]) => (v !== null && typeof v === 'object' && !Array.isArray(v) ? flatRows(v, `${prefix}${k}.`) : [h('tr', {}, h('td', { class: 'small' }, prefix + k), h('td', { class: 'small' }, text(v)))]));
}

function renderHealth(d: Obj): HTMLElement {
  const hl = obj(d.health);
  const st = obj(d.stats);
  const checks = obj(hl.checks);
  const ops = obj(st.ops);
  const services = obj(st.services);
  return h(
    'section',
    {},
    h('h1', {}, 'Health'),
    errorsBox(d),
    h(
      'div',
      { class: 'cards' },
      card('status', h('span', { class: hl.status === 'ok' ? 'pos' : 'neg', 'data-field': 'status' }, text(hl.status))),
      card('in flight', text(hl.in_flight)),
      card('uptime', `${Math.round(num(hl.uptime_ms) / 1000)} s`),
      card('version', text(hl.version), `protocol ${text(hl.protocol)}, node ${text(hl.node_version)}, os pid ${text(hl.os_pid)}`),
      card('memory (rss)', `${Math.round(num(obj(st.memory).rss) / 1048576)} MiB`),
    ),
    arr(hl.reasons).length > 0 ? h('div', { class: 'errors' }, ...arr(hl.reasons).map((r) => h('div', {}, text(r)))) : null,
    h('h2', {}, 'Dependencies'),
    table(['check', 'status', 'detail'], ['database', 'nats'].map((k) => h('tr', {}, h('td', {}, k === 'database' ? 'store (database)' : 'NATS'), h('td', { class: obj(checks[k]).status === 'down' ? 'neg' : '' }, text(obj(checks[k]).status)), h('td', { class: 'small' }, text(obj(checks[k]).detail))))),
    h('h2', {}, 'central_cloud'),
    table(['figure', 'value'], flatRows(obj(services.templates))),
    h('h2', {}, 'Ops'),
    table(['op', ['calls', 'num'], ['errors', 'num'], ['mean ms', 'num']], Object.entries(ops).sort((a, b) => num(obj(b[1]).calls) - num(obj(a[1]).calls)).map(([k, v]) => h('tr', {}, h('td', {}, k), h('td', { class: 'num' }, text(obj(v).calls)), h('td', { class: 'num' }, text(obj(v).errors)), h('td', { class: 'num' }, num(obj(v).mean_ms).toFixed(3))))),
    h('h2', {}, 'Services (the figures of stats)'),
    table(['figure', 'value'], flatRows(Object.fromEntries(Object.entries(services).filter(([k]) => k !== 'templates')))),
  );
}

// ---------------------------------------------------------------- routing, loading, live

const page = location.pathname.replace(/^\//, '') || 'experiments';
const RENDER: Record<string, (d: Obj) => HTMLElement> = { experiments: renderExperiments, experiment: renderExperiment, prompts: renderPrompts, models: renderModels, health: renderHealth };
let renders = 0;

function draw(d: Obj): void {
  const render = RENDER[page];
  const main = document.getElementById('main')!;
  if (render === undefined) {
    main.replaceChildren(h('p', {}, 'no such page'));
    return;
  }
  const y = window.scrollY;
  const t0 = performance.now();
  for (const c of drawn.splice(0)) c.destroy();
  document.body.dataset.liveCharts = '0';
  main.replaceChildren(render(d));
  window.scrollTo(0, y);
  renders++;
  document.body.dataset.renders = String(renders);
  document.body.dataset.renderMs = (performance.now() - t0).toFixed(1);
  if (renders === 1) document.body.dataset.firstRenderAt = performance.now().toFixed(1);
}

async function load(): Promise<void> {
  const r = await fetch(`/${page}.json${location.search}`, { headers: token() === '' ? {} : { 'x-prompt-engine-token': token() } });
  if (r.status === 401) {
    document.getElementById('main')!.replaceChildren(h('div', { class: 'errors' }, 'This dashboard is not on loopback: enter the operator token at the top to read it.'));
    return;
  }
  draw(obj((await r.json()) as Json));
}

let stream: EventSource | undefined;

function connect(): void {
  const state = document.getElementById('live')!;
  stream?.close();
  const es = (stream = new EventSource(`/${page}.events${location.search}`));
  es.onopen = () => {
    state.textContent = 'live';
    state.className = 'live on';
  };
  es.onerror = () => {
    state.textContent = 'reconnecting';
    state.className = 'live off';
  };
  es.onmessage = (m: MessageEvent<string>) => {
    document.body.dataset.updates = String(Number(document.body.dataset.updates ?? 0) + 1);
    draw(obj(JSON.parse(m.data) as Json));
  };
}

function setup(): void {
  for (const a of document.querySelectorAll('nav a')) if (a.getAttribute('href') === `/${page}` || (page === 'experiment' && a.getAttribute('href') === '/experiments')) a.classList.add('current');
  const input = document.getElementById('token') as HTMLInputElement;
  input.value = token();
  document.getElementById('token-form')!.addEventListener('submit', (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value);
    // On a non-loopback bind the live stream reads with a cookie (EventSource sends no header).
    void fetch('/login', { method: 'POST', headers: { 'content-type': 'application/json', 'x-prompt-engine-token': input.value }, body: '{}' }).then(() => load().then(connect));
  });
  void load().then(connect);
}

setup();
