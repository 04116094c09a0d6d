/**
 * Each page's data, made only from what the ops return (`experiment`,
 * `query`, `prompt_stats`, `models`, `health`, `stats`), shaped for the page
 * and served as JSON beside it: `/experiments.json` is exactly what
 * `/experiments` draws. What is derived here is arithmetic on those replies
 * (95% Wilson intervals, best and worst prompts, rating counts), never a
 * second source. An op that fails leaves its part of the page empty and
 * names the failure in `errors`; the rest is shown.
 *
 * Charts over outcomes need the `experiment` op's `history: true` argument
 * (buckets of cumulative outcomes and successes with each variant's
 * servings, and the loop's events). `describe` says whether the op takes
 * it; when it does not, `history` is null and the page draws from the
 * points it receives live (docs/dashboard.md).
 */
import type { Json } from '../codec/json.js';
import { termToJson } from '../codec/json.js';
import type { OpResult } from '../ops/index.js';

/** How the dashboard reaches the op table (the same dispatch the Port and NATS use). */
export type OpCall = (op: string, args: { [k: string]: Json }) => Promise<OpResult>;

type Obj = { [k: string]: Json };

export const PAGE_NAMES = ['experiments', 'experiment', 'prompts', 'models', 'health'] as const;
export type PageName = (typeof PAGE_NAMES)[number];

/** The query parameters each page reads (its live updates are shared by every viewer asking for the same ones; others are ignored). */
export const PAGE_PARAMS: Readonly<Record<PageName, readonly string[]>> = { experiments: [], experiment: ['name', 'model'], prompts: ['min_count'], models: [], health: [] };

/** A page's data, and the HTTP status its JSON is served with. */
export interface PageResult {
  status: number;
  data: Obj;
}

/** Feedback rows the prompts page reads (the last 7 days, the most recent first). */
const FEEDBACK_ROWS = 1_000;
/**
 * ... when those pass one query reply's 16 MiB: a feedback row's text is at
 * most about 210 KB (64 KiB of context and 10,000 characters of comment,
 * each escaped twice over at worst), so 50 always fit.
 */
const FEEDBACK_ROWS_LARGE = 50;
const obj = (v: Json | undefined): Obj => (v !== null && typeof v === 'object' && !Array.isArray(v) ? v : {});
const arr = (v: Json | undefined): Json[] => (Array.isArray(v) ? v : []);
const numOf = (v: Json | undefined): number => (typeof v === 'number' ? v : 0);

/** The 95% Wilson score interval of `s` successes in `n`, or null without outcomes. */
export function wilson(s: number, n: number, z = 1.96): [number, number] | null {
  if (n <= 0) return null;
  const p = s / n;
  const z2 = z * z;
  const d = 1 + z2 / n;
  const c = p + z2 / (2 * n);
  const r = z * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n));
  return [Math.max(0, (c - r) / d), Math.min(1, (c + r) / d)];
}

/** A rate-and-count map (leader, base) with its interval. */
function withInterval(m: Obj): Obj {
  const count = numOf(m.count);
  const successes = m.successes !== undefined ? numOf(m.successes) : Math.round(numOf(m.success_rate) * count);
  return { ...m, successes, interval: wilson(successes, count) };
}

/** The last change an experiment's events record (history contract), or null. */
function lastChange(e: Obj): Json {
  const events = arr(e.events);
  const last = obj(events[events.length - 1]);
  return last.at === undefined ? null : { kind: last.kind ?? null, prompt_id: last.prompt_id ?? null, outcomes: last.outcomes ?? null, at: last.at };
}

export class Pages {
  private historyArg: Promise<boolean> | undefined;

  constructor(
    private readonly call: OpCall,
    /** Whether operator actions are possible (a token is configured); shown, never the token. */
    private readonly actionsEnabled: boolean,
  ) {}

  /** Whether the `experiment` op takes `history: true` (asked of `describe` once). */
  historySupported(): Promise<boolean> {
    this.historyArg ??= this.call('describe', { op: 'experiment' }).then((r) => {
      if (!r.ok) {
        this.historyArg = undefined; // ask again next time
        return false;
      }
      const op = obj(arr(obj(termToJson(r.value)).ops)[0]);
      return arr(op.args).some((a) => obj(a).name === 'history');
    });
    return this.historyArg;
  }

  async page(name: PageName, params: URLSearchParams): Promise<PageResult> {
    switch (name) {
      case 'experiments':
        return this.experiments();
      case 'experiment':
        return this.experiment(params);
      case 'prompts':
        return this.prompts(params);
      case 'models':
        return this.models();
      case 'health':
        return this.health();
    }
  }

  private async op(op: string, args: Obj, errors: Json[]): Promise<Obj | undefined> {
    const r = await this.call(op, args);
    if (r.ok) return obj(termToJson(r.value));
    errors.push({ op, reason: r.reason, message: r.message });
    return undefined;
  }

  private head(page: PageName, errors: Json[]): Obj {
    return { page, generated_at: new Date().toISOString(), actions_enabled: this.actionsEnabled, errors };
  }

  async experiments(): Promise<PageResult> {
    const errors: Json[] = [];
    const history = await this.historySupported();
    const r = await this.op('experiment', history ? { history: true } : {}, errors);
    const experiments = arr(r?.experiments).map((x) => {
      const e = obj(x);
      return {
        ...e,
        leader: withInterval(obj(e.leader)),
        base: withInterval(obj(e.base)),
        history: history ? arr(e.history) : null,
        events: history ? arr(e.events) : null,
        last_change: history ? lastChange(e) : null,
      };
    });
    return { status: 200, data: { ...this.head('experiments', errors), history_supported: history, experiments } };
  }

  async experiment(params: URLSearchParams): Promise<PageResult> {
    const errors: Json[] = [];
    const name = params.get('name') ?? '';
    const model = params.get('model') ?? undefined;
    if (name === '' || name.length > 200)
      return { status: 400, data: { ...this.head('experiment', errors), error: { reason: 'bad_request', message: 'name: expected the experiment name (1..200 characters)' } } };
    const history = await this.historySupported();
    const args: Obj = { experiment: name };
    if (model !== undefined && model !== '') args.model = model;
    if (history) args.history = true;
    const r = await this.call('experiment', args);
    if (!r.ok) return { status: r.reason === 'not_found' ? 404 : r.reason === 'bad_request' ? 400 : 503, data: { ...this.head('experiment', errors), error: { reason: r.reason, message: r.message } } };
    const exps = arr(obj(termToJson(r.value)).experiments).map(obj);
    const e = model === undefined || model === '' ? (exps.length === 1 ? exps[0] : undefined) : exps.find((x) => x.model === model);
    if (e === undefined) {
      // Several models run an experiment of this name: the page lists them.
      return { status: exps.length === 0 ? 404 : 300, data: { ...this.head('experiment', errors), experiment: name, models: exps.map((x) => x.model ?? null), error: { reason: 'choose_model', message: `experiment ${name} runs for ${exps.length} models: choose one` } } };
    }
    const variants = arr(e.variants).map((v) => {
      const o = obj(v);
      return { ...o, interval: wilson(numOf(o.successes), numOf(o.count)) };
    });
    const evolutions = await this.evolutions(name, String(e.model), String(obj(e.base).prompt_id ?? ''), errors);
    return {
      status: 200,
      data: {
        ...this.head('experiment', errors),
        history_supported: history,
        experiment: {
          ...e,
          leader: withInterval(obj(e.leader)),
          base: withInterval(obj(e.base)),
          variants,
          history: history ? arr(e.history) : null,
          events: history ? arr(e.events) : null,
          last_change: history ? lastChange(e) : null,
        },
        evolutions,
        // Retirements and bans are recorded as ABTestResult entries; no query kind reads those yet,
        // so the page shows them from the op's events (history contract) when it has them.
        ab_results: history ? arr(e.events).filter((ev) => obj(ev).kind === 'retired' || obj(ev).kind === 'banned') : null,
      },
    };
  }

  /** The experiment's PromptEvolution entries: the chain of leader changes from its base (query evolution_history). */
  private async evolutions(name: string, model: string, baseId: string, errors: Json[]): Promise<Json[]> {
    const out: Json[] = [];
    const seen = new Set<string>();
    const visited = new Set<string>();
    let frontier = baseId === '' ? [] : [baseId];
    for (let step = 0; step < 50 && frontier.length > 0; step++) {
      const id = frontier.shift()!;
      if (visited.has(id)) continue;
      visited.add(id);
      const r = await this.op('query', { kind: 'evolution_history', prompt_id: id, limit: 500 }, errors);
      if (r === undefined) break;
      for (const row of arr(r.rows).map(obj)) {
        const meta = obj(row.evolution_metadata);
        if (meta.experiment !== name || meta.model !== model) continue;
        const key = String(row.id ?? `${String(row.original_prompt_id)}>${String(row.evolved_prompt_id)}>${String(row.evolution_timestamp)}`);
        if (seen.has(key)) continue;
        seen.add(key);
        out.push(row);
        if (typeof row.evolved_prompt_id === 'string') frontier.push(row.evolved_prompt_id);
      }
    }
    return out.sort((a, b) => String(obj(a).evolution_timestamp).localeCompare(String(obj(b).evolution_timestamp)));
  }

  /**
   * The last 7 days' feedback, the most recent FEEDBACK_ROWS; when their text
   * passes what one query reply carries (large contexts), the most recent
   * FEEDBACK_ROWS_LARGE, whose text fits whatever the contexts hold.
   */
  private async recentFeedback(errors: Json[]): Promise<Obj | undefined> {
    const passed: Json[] = [];
    const all = await this.op('query', { kind: 'recent_feedback', duration: '7d', limit: FEEDBACK_ROWS }, passed);
    if (all !== undefined) return all;
    if (!passed.some((e) => obj(e).reason === 'bad_request')) return void errors.push(...passed);
    return this.op('query', { kind: 'recent_feedback', duration: '7d', limit: FEEDBACK_ROWS_LARGE }, errors);
  }

  async prompts(params: URLSearchParams): Promise<PageResult> {
    const errors: Json[] = [];
    const minCount = Math.max(1, Math.min(1_000_000, Number(params.get('min_count') ?? 10) || 10));
    const limit = 10_000;
    const [top, feedback] = await Promise.all([this.op('query', { kind: 'high_performance', threshold: 0, min_count: 1, limit }, errors), this.recentFeedback(errors)]);
    const rows = arr(top?.rows).map(obj);
    const totals = rows.reduce<{ executions: number; successes: number }>((t, r) => ({ executions: t.executions + numOf(r.count), successes: t.successes + numOf(r.successes) }), { executions: 0, successes: 0 });
    const ranked = rows.filter((r) => numOf(r.count) >= minCount).map((r) => ({ ...r, interval: wilson(numOf(r.successes), numOf(r.count)) }));
    const fb = arr(feedback?.rows).map(obj);
    const ratings: Record<string, number> = { '1': 0, '2': 0, '3': 0, '4': 0, '5': 0 };
    let rated = 0;
    let sum = 0;
    for (const f of fb) {
      const r = f.rating;
      if (typeof r !== 'number') continue;
      const k = String(Math.max(1, Math.min(5, Math.round(r))));
      ratings[k] = (ratings[k] ?? 0) + 1;
      rated++;
      sum += r;
    }
    return {
      status: 200,
      data: {
        ...this.head('prompts', errors),
        min_count: minCount,
        prompts: rows.length,
        truncated: rows.length >= limit,
        totals: { ...totals, success_rate: totals.executions === 0 ? 0 : totals.successes / totals.executions },
        best: ranked.slice(0, 10),
        worst: ranked.slice(-10).reverse(),
        feedback: {
          window: '7d',
          count: fb.length,
          ratings,
          mean_rating: rated === 0 ? null : sum / rated,
          recent: fb.slice(0, 20).map((f) => ({ prompt_id: f.prompt_id ?? null, feedback_type: f.feedback_type ?? null, rating: f.rating ?? null, comment: f.comment ?? null, timestamp: f.timestamp ?? null })),
        },
      },
    };
  }

  async models(): Promise<PageResult> {
    const errors: Json[] = [];
    const [m, health] = await Promise.all([this.op('models', { limit: 100 }, errors), this.op('health', {}, errors)]);
    return {
      status: 200,
      data: {
        ...this.head('models', errors),
        serving: m?.serving ?? null,
        promoted: arr(m?.promoted),
        models: arr(m?.models),
        learner: m?.learner ?? null,
        sidecar: health === undefined ? null : { os_pid: health.os_pid ?? null, version: health.version ?? null, uptime_ms: health.uptime_ms ?? null },
      },
    };
  }

  async health(): Promise<PageResult> {
    const errors: Json[] = [];
    const [health, stats] = await Promise.all([this.op('health', {}, errors), this.op('stats', {}, errors)]);
    return { status: 200, data: { ...this.head('health', errors), health: health ?? null, stats: stats ?? null } };
  }
}
