/**
 * The closed loop's durable state, shared by every sidecar on this
 * database: each experiment (name, model) with its generation, status, pin,
 * leader and batch trigger, every variant it has tried or holds in reserve
 * (text, origin, prior, state), and per-variant outcome counts. The counts
 * move in the same statement that stores each outcome's execution row
 * (groupCommitWriter.ts), so they are exact and idempotent on the entry id;
 * everything else moves in `change`, a transaction that locks the
 * experiment's row, so the decider's decisions and operators' actions are
 * applied one at a time, each checked against the state it finds. Every
 * change bumps the experiment's `revision` and is announced on the loop's
 * NOTIFY channel, so every sidecar's view follows within its bound.
 */
import type { EntryRow } from './entries.js';
import { TRAINING_READ, unnestInsert, type Query, type Row, type SqlClient, type SqlParam, type UnnestColumn } from './db.js';

export type VariantOrigin = 'base' | 'offline' | 'llm';
/** `reserve`: screened, not yet served; `active`: served; `retired`/`banned`: no longer served. */
export type VariantState = 'active' | 'retired' | 'banned' | 'reserve';
export type ExperimentStatus = 'running' | 'stopped';

/** What an experiment can optimize (experiments/objective.ts says how each is judged). */
export const OBJECTIVE_KINDS = ['success', 'score', 'reward'] as const;
export type ObjectiveKind = (typeof OBJECTIVE_KINDS)[number];

export interface Objective {
  kind: ObjectiveKind;
  /** reward: how much one unit of cost per call takes off the score. */
  cost_weight: number;
  /** Cost per input token, and per output token, added to the reported cost. */
  input_token_cost: number;
  output_token_cost: number;
  max_latency_ms_p90: number | null;
  max_cost_per_call: number | null;
}

export const DEFAULT_OBJECTIVE: Objective = { kind: 'success', cost_weight: 0, input_token_cost: 0, output_token_cost: 0, max_latency_ms_p90: null, max_cost_per_call: null };

/** A variant's counted outcomes (the store's per-variant aggregates). */
export interface VariantTotals {
  successes: number;
  count: number;
  /** Graded observations (every call: its score, else its success; and late ratings). */
  scored: number;
  score_sum: number;
  score_sq: number;
  /** Calls that reported a cost. */
  cost_n: number;
  cost_sum: number;
  cost_sq: number;
  /** Calls that reported tokens. */
  tokens_n: number;
  tokens_in: number;
  tokens_out: number;
  latency_sum: number;
  latency_sq: number;
  /** Calls slower than the experiment's latency bound (counted against the bound it had when they arrived). */
  over_latency: number;
}

export const NO_TOTALS: VariantTotals = { successes: 0, count: 0, scored: 0, score_sum: 0, score_sq: 0, cost_n: 0, cost_sum: 0, cost_sq: 0, tokens_n: 0, tokens_in: 0, tokens_out: 0, latency_sum: 0, latency_sq: 0, over_latency: 0 };

/** The totals keys, in one place (the store reads and writes them by these names; the counting trigger's columns). */
export const TOTALS_KEYS = Object.keys(NO_TOTALS) as ReadonlyArray<keyof VariantTotals>;

export interface ExperimentKey {
  name: string;
  model: string;
}

export interface ExperimentRow extends ExperimentKey {
  generation: number;
  base_prompt_id: string;
  status: ExperimentStatus;
  pinned_prompt_id: string | null;
  proposals_made: number;
  /** Null only for experiments written before the leader was stored. */
  leader_prompt_id: string | null;
  /** What the generation optimizes (success unless set at its start). */
  objective: Objective;
  /** Outcomes of the generation when the last proposal batch was made. */
  outcomes_at_last_batch: number;
  revision: number;
  updated_at: string;
}

/** A variant's state and its counted outcomes (every aggregate the loop judges it by: experiments/objective.ts). */
export interface VariantCounts extends VariantTotals {
  prompt_id: string;
  state: VariantState;
}

/** What a variant holds before anything is counted. */
type Uncounted<T> = Omit<T, keyof VariantTotals>;

export interface VariantRow extends VariantCounts {
  text: string;
  origin: VariantOrigin;
  prior_alpha: number;
  prior_beta: number;
  predicted: number | null;
  /** Reserve order: the decider's estimate of promise when the candidate was ranked. */
  rank: number | null;
}

/** An experiment's row and its current generation's variants with their counts. */
export interface ExperimentSnapshot {
  row: ExperimentRow;
  variants: VariantRow[];
}

/** What a refresh reads: the row, and each variant's state and counts (texts are read once, when a variant is new to a view). */
export interface ExperimentCounts {
  row: ExperimentRow;
  counts: VariantCounts[];
}

/** A new generation (a new experiment, a changed base, a reset): applied only when newer than the stored one. */
export interface GenerationWrite extends ExperimentKey {
  generation: number;
  base: Omit<Uncounted<VariantRow>, 'state' | 'rank'>;
  /** What the generation optimizes. */
  objective: Objective;
}

/** One change to an experiment, applied in one locked transaction by `change`. */
export interface ExperimentChange {
  fields?: Partial<Pick<ExperimentRow, 'status' | 'pinned_prompt_id' | 'proposals_made' | 'leader_prompt_id' | 'outcomes_at_last_batch'>>;
  /** New variants (into the pool or the reserve); one already a variant of the generation is left as it is. */
  add?: Array<Uncounted<VariantRow>>;
  /** State moves, each applied only from the states it lists (a decision made on a stale view, or replayed, changes nothing). */
  moves?: Array<{ prompt_id: string; from: readonly VariantState[]; to: VariantState }>;
  /** Tracking entries written with the change (a retirement's A/B result, a leader change's evolution). */
  entries?: EntryRow[];
  /** Reset: a new generation from this base, instead of the fields and variants above. */
  generation?: GenerationWrite;
  /** What the experiment's history records with the change (decisions as events, counts as a snapshot). */
  history?: HistoryEntry[];
}

/** One line of an experiment's history: a snapshot of its counts, or a decision, at a number of outcomes. */
export interface HistoryEntry {
  kind: 'snapshot' | 'leader' | 'retired' | 'banned' | 'admitted';
  prompt_id: string | null;
  outcomes: number;
  successes: number;
  /** A snapshot's counts by variant. */
  variants: Record<string, number> | null;
}

export interface HistoryRow extends HistoryEntry {
  at: string;
}

/** A transaction runner: the pool's, or a lease's (fenced). */
export type TxRunner = <T>(fn: (q: Query) => Promise<T>) => Promise<T>;

/** Writes tracking entries inside the change's transaction. */
export type EntryWriter = (q: Query, rows: EntryRow[]) => Promise<void>;

/** One experiment's change in `changeMany`. */
export interface ChangeItem {
  key: ExperimentKey & { generation?: number };
  decide: (s: ExperimentSnapshot) => ExperimentChange | undefined;
}

/** What the loop announces on its channel: the sender, and the experiments that changed (`all` when too many to list). */
export interface LoopNotice {
  s: string;
  k?: Array<[string, string]>;
  all?: true;
  hb?: number;
  /** What to serve moved (a decision, an operator's action, a new generation), not only counts: followed at once. */
  state?: true;
}

/** PostgreSQL's NOTIFY payload limit is 8000 bytes; past this many, a notice says `all`. */
const MAX_NOTICE_BYTES = 7_000;

export function loopNotice(sender: string, keys: Iterable<ExperimentKey>): string {
  const k: Array<[string, string]> = [];
  const seen = new Set<string>();
  for (const key of keys) {
    const id = `${key.name}\u0000${key.model}`;
    if (seen.has(id)) continue;
    seen.add(id);
    k.push([key.name, key.model]);
  }
  // Counts move through the counting trigger's notices; this one says the loop's state moved.
  const text = JSON.stringify({ s: sender, k, state: true } satisfies LoopNotice);
  return Buffer.byteLength(text) <= MAX_NOTICE_BYTES ? text : JSON.stringify({ s: sender, all: true, state: true } satisfies LoopNotice);
}

const EXPERIMENT_COLUMNS = `e.name, e.model, e.generation, e.base_prompt_id, e.status, e.pinned_prompt_id, e.proposals_made, e.leader_prompt_id, e.outcomes_at_last_batch, e.revision, e.updated_at, e.objective`;

/** Variants of each selected experiment's current generation, with counts, as one JSON array per experiment. */
const variantsJson = (withText: boolean): string => `(
  SELECT coalesce(json_agg(json_build_object(
           'prompt_id', v.prompt_id, 'state', v.state, ${TOTALS_KEYS.map((k) => `'${k}', coalesce(c.${k}, 0)`).join(', ')}
           ${withText ? `, 'text', v.text, 'origin', v.origin, 'prior_alpha', v.prior_alpha, 'prior_beta', v.prior_beta, 'predicted', v.predicted, 'rank', v.rank` : ''}
         ) ORDER BY v.seq), '[]'::json)
    FROM experiment_variants v
    LEFT JOIN experiment_counts c ON c.name = v.name AND c.model = v.model AND c.generation = v.generation AND c.prompt_id = v.prompt_id
   WHERE v.name = e.name AND v.model = e.model AND v.generation = e.generation) AS variants`;

export class ExperimentRecords {
  constructor(
    private readonly db: SqlClient,
    private readonly migrate: () => Promise<void>,
    /** The loop's NOTIFY channel and this instance's name on it. */
    readonly notice: { channel: string; sender: string },
  ) {}

  /** Experiments with every variant of their current generation (texts included). `keys` absent: the `limit` most recently changed. */
  async load(keys?: readonly ExperimentKey[], limit = 10_000): Promise<ExperimentSnapshot[]> {
    await this.migrate();
    const rows = await this.select((sql, params) => this.db.query(sql, params), true, keys, limit, false);
    return rows.map((r) => ({ row: toExperiment(r), variants: (r.variants as Row[]).map(toVariant) }));
  }

  /** Rows and counts only (what a view refreshes). */
  async counts(keys?: readonly ExperimentKey[], limit = 10_000): Promise<ExperimentCounts[]> {
    await this.migrate();
    const rows = await this.select((sql, params) => this.db.query(sql, params), false, keys, limit, false);
    return rows.map((r) => ({ row: toExperiment(r), counts: (r.variants as Row[]).map(toCounts) }));
  }

  /** The (experiment, model)s of one name (of one model when given), with texts, by model: at most `limit`. */
  async named(name: string, limit: number, model?: string): Promise<ExperimentSnapshot[]> {
    await this.migrate();
    const rows = await this.db.query(`SELECT ${EXPERIMENT_COLUMNS}, ${variantsJson(true)} FROM experiments e WHERE e.name = $1 AND ($3::text IS NULL OR e.model = $3) ORDER BY e.model LIMIT $2`, [name, limit, model ?? null]);
    return rows.map((r) => ({ row: toExperiment(r), variants: (r.variants as Row[]).map(toVariant) }));
  }

  private async select(q: Query, withText: boolean, keys: readonly ExperimentKey[] | undefined, limit: number, lock: boolean): Promise<Row[]> {
    if (keys !== undefined && keys.length === 0) return [];
    const where = keys === undefined ? '' : `WHERE (e.name, e.model) IN (SELECT * FROM unnest($1::text[], $2::text[]))`;
    const params = keys === undefined ? [limit] : [keys.map((k) => k.name), keys.map((k) => k.model)];
    const order = keys === undefined ? 'ORDER BY e.updated_at DESC LIMIT $1' : '';
    return q(`SELECT ${EXPERIMENT_COLUMNS}, ${variantsJson(withText)} FROM experiments e ${where} ${order}${lock ? ' FOR UPDATE OF e' : ''}`, params);
  }

  /**
   * Apply what `decide` returns for the experiment's current state, in one
   * transaction holding its row lock (through `tx`: the pool for operators,
   * the decider's lease for decisions, so a decider that lost its lease
   * cannot write). `decide` sees the locked snapshot and may throw (the
   * transaction rolls back) or return undefined (nothing to do). Returns
   * the snapshot after the change, undefined when there is no such
   * experiment (or `generation` is given and is no longer the current one).
   */
  async change(tx: TxRunner, key: ChangeItem['key'], decide: ChangeItem['decide'], writeEntries: EntryWriter): Promise<ExperimentSnapshot | undefined> {
    return (await this.changeMany(tx, [{ key, decide }], writeEntries))[0];
  }

  /**
   * `change` for many experiments in one transaction (the decider's group
   * commit): their rows locked in key order (no deadlock with another
   * writer), each item deciding on its experiment's state after the items
   * before it, every statement shared by all of them (one insert of new
   * variants, one update of moved states, one of the rows' fields and
   * revisions, one notice). If one `decide` throws, nothing is written.
   */
  async changeMany(tx: TxRunner, items: readonly ChangeItem[], writeEntries: EntryWriter): Promise<Array<ExperimentSnapshot | undefined>> {
    if (items.length === 0) return [];
    await this.migrate();
    return tx(async (q) => {
      const keys = [...new Map(items.map((i) => [`${i.key.name}\u0000${i.key.model}`, { name: i.key.name, model: i.key.model }])).values()].sort((a, b) =>
        a.name < b.name ? -1 : a.name > b.name ? 1 : a.model < b.model ? -1 : a.model > b.model ? 1 : 0,
      );
      const locked = new Map<string, ExperimentSnapshot>();
      for (const r of await q(`SELECT ${EXPERIMENT_COLUMNS}, ${variantsJson(true)} FROM experiments e WHERE (e.name, e.model) IN (SELECT * FROM unnest($1::text[], $2::text[])) ORDER BY e.name, e.model FOR UPDATE OF e`, [keys.map((k) => k.name), keys.map((k) => k.model)]))
        locked.set(`${String(r.name)}\u0000${String(r.model)}`, { row: toExperiment(r), variants: (r.variants as Row[]).map(toVariant) });
      const out: Array<ExperimentSnapshot | undefined> = [];
      const changed = new Map<string, { snap: ExperimentSnapshot; fields: NonNullable<ExperimentChange['fields']> }>();
      const adds: VariantAdd[] = [];
      const moves: Array<{ row: ExperimentRow; m: NonNullable<ExperimentChange['moves']>[number] }> = [];
      const entries: EntryRow[] = [];
      const history: HistoryAdd[] = [];
      const resets: Array<{ id: string; g: GenerationWrite; index: number }> = [];
      for (const item of items) {
        const id = `${item.key.name}\u0000${item.key.model}`;
        const snap = locked.get(id);
        if (snap === undefined || (item.key.generation !== undefined && snap.row.generation !== item.key.generation)) {
          out.push(undefined);
          continue;
        }
        const c = item.decide(snap);
        if (c === undefined) {
          out.push(snap);
          continue;
        }
        if (c.entries !== undefined) entries.push(...c.entries);
        if (c.generation !== undefined) {
          resets.push({ id, g: c.generation, index: out.length });
          out.push(undefined);
          continue;
        }
        for (const v of c.add ?? []) adds.push({ row: snap.row, v });
        for (const m of c.moves ?? []) moves.push({ row: snap.row, m });
        for (const h of c.history ?? []) history.push({ row: snap.row, h });
        if (c.fields === undefined && (c.add ?? []).length === 0 && (c.moves ?? []).length === 0) {
          // History only: the state did not move (no revision, no notice).
          out.push(snap);
          continue;
        }
        const after = applyToSnapshot(snap, c, { revision: snap.row.revision, updated_at: snap.row.updated_at });
        locked.set(id, after);
        changed.set(id, { snap: after, fields: { ...(changed.get(id)?.fields ?? {}), ...(c.fields ?? {}) } });
        out.push(after);
      }
      await applyVariants(q, adds, moves);
      if (entries.length > 0) await writeEntries(q, entries);
      await writeHistory(q, history);
      if (changed.size > 0) {
        // Every changed row's fields and revision in one statement (a field not set keeps its value).
        const rows = [...changed.values()];
        const col = <K extends keyof NonNullable<ExperimentChange['fields']>>(k: K) => rows.map((r) => (k in r.fields ? (r.fields[k] ?? null) : null));
        const set = (k: keyof NonNullable<ExperimentChange['fields']>) => rows.map((r) => k in r.fields);
        const bumped = await q(
          `UPDATE experiments e SET
             status = CASE WHEN u.s_status THEN u.status ELSE e.status END,
             pinned_prompt_id = CASE WHEN u.s_pinned THEN u.pinned ELSE e.pinned_prompt_id END,
             proposals_made = CASE WHEN u.s_proposals THEN u.proposals ELSE e.proposals_made END,
             leader_prompt_id = CASE WHEN u.s_leader THEN u.leader ELSE e.leader_prompt_id END,
             outcomes_at_last_batch = CASE WHEN u.s_batch THEN u.batch ELSE e.outcomes_at_last_batch END,
             revision = e.revision + 1, updated_at = now()
             FROM unnest($1::text[], $2::text[], $3::bool[], $4::text[], $5::bool[], $6::text[], $7::bool[], $8::int4[], $9::bool[], $10::text[], $11::bool[], $12::int8[])
               AS u(name, model, s_status, status, s_pinned, pinned, s_proposals, proposals, s_leader, leader, s_batch, batch)
            WHERE e.name = u.name AND e.model = u.model
          RETURNING e.name, e.model, e.revision, e.updated_at`,
          [
            rows.map((r) => r.snap.row.name),
            rows.map((r) => r.snap.row.model),
            set('status'),
            col('status'),
            set('pinned_prompt_id'),
            col('pinned_prompt_id'),
            set('proposals_made'),
            col('proposals_made'),
            set('leader_prompt_id'),
            col('leader_prompt_id'),
            set('outcomes_at_last_batch'),
            col('outcomes_at_last_batch'),
          ],
        );
        const revisions = new Map(bumped.map((b) => [`${String(b.name)}\u0000${String(b.model)}`, { revision: Number(b.revision), updated_at: isoOf(b.updated_at) }]));
        for (let i = 0; i < out.length; i++) {
          const s = out[i];
          if (s === undefined) continue;
          const r = revisions.get(`${s.row.name}\u0000${s.row.model}`);
          if (r !== undefined) out[i] = { ...s, row: { ...s.row, ...r } };
        }
      }
      // A reset: a new generation, read back whole (rare).
      for (const r of resets) {
        await writeGeneration(q, r.g);
        const after = (await this.select(q, true, [r.g], 1, false))[0]!;
        out[r.index] = { row: toExperiment(after), variants: (after.variants as Row[]).map(toVariant) };
      }
      if (changed.size > 0 || resets.length > 0) await q('SELECT pg_notify($1, $2)', [this.notice.channel, loopNotice(this.notice.sender, [...[...changed.values()].map((c) => c.snap.row), ...resets.map((r) => r.g)])]);
      return out;
    });
  }

  /** An experiment generation's history, oldest first (at most `limit` lines, the newest kept). */
  async history(key: ExperimentKey & { generation: number }, limit = 2_000): Promise<HistoryRow[]> {
    await this.migrate();
    const rows = await this.db.query(
      `SELECT * FROM (SELECT kind, prompt_id, outcomes, successes, variants, at, seq FROM experiment_history
         WHERE name = $1 AND model = $2 AND generation = $3 ORDER BY seq DESC LIMIT $4) h ORDER BY seq`,
      [key.name, key.model, key.generation, limit],
    );
    return rows.map((r) => ({
      kind: String(r.kind) as HistoryEntry['kind'],
      prompt_id: r.prompt_id === null || r.prompt_id === undefined ? null : String(r.prompt_id),
      outcomes: Number(r.outcomes),
      successes: Number(r.successes),
      variants: (r.variants ?? null) as Record<string, number> | null,
      at: isoOf(r.at),
    }));
  }

  /**
   * The loop's outcomes for the trainer: its counts (experiment_counts) summed over generations, one row
   * per (variant, model), n > 0, at most `limit` (default 1,000,000, in the order of their prompt ids). As
   * many rows as variants, however many outcomes they count: the trainer never reads them one by one. An
   * outcome the counting trigger could not place (no generation in its metadata, and no experiment of
   * its name and model) is in no count, and so not learnt from. One variant in several experiments is
   * learnt under the first of their names.
   */
  async outcomesByVariant(opts: { limit?: number } = {}): Promise<Array<{ prompt_id: string; model: string; experiment: string; n: number; successes: number }>> {
    const rows = await this.db.query(
      `SELECT prompt_id, model, min(name) AS name, sum(count)::float8 AS n, sum(successes)::float8 AS successes
         FROM experiment_counts GROUP BY prompt_id, model HAVING sum(count) > 0 ORDER BY prompt_id, model LIMIT $1`,
      [opts.limit ?? 1_000_000],
      TRAINING_READ,
    );
    return rows.map((r) => ({ prompt_id: String(r.prompt_id), model: String(r.model), experiment: String(r.name), n: Number(r.n), successes: Number(r.successes) }));
  }

  /** The text of each variant any experiment has tried (not a reserve): what the trainer learns the loop's outcomes as. */
  async variantTexts(): Promise<Map<string, { text: string; experiment: string; model: string }>> {
    const rows = await this.db.query(`SELECT DISTINCT ON (prompt_id) prompt_id, text, name, model FROM experiment_variants WHERE state <> 'reserve' ORDER BY prompt_id, seq`, [], TRAINING_READ);
    return new Map(rows.map((r) => [String(r.prompt_id), { text: String(r.text), experiment: String(r.name), model: String(r.model) }]));
  }
}

/**
 * A snapshot with a change applied as `change` applies it in the store:
 * variants added when absent, states moved only from the states listed,
 * fields set, the new revision. (The closed loop's tests drive the policy
 * with it.)
 */
export function applyToSnapshot(s: ExperimentSnapshot, c: ExperimentChange, after: Pick<ExperimentRow, 'revision' | 'updated_at'>): ExperimentSnapshot {
  const variants = s.variants.map((v) => ({ ...v }));
  for (const a of c.add ?? []) if (!variants.some((v) => v.prompt_id === a.prompt_id)) variants.push({ ...a, ...NO_TOTALS });
  for (const m of c.moves ?? []) {
    const v = variants.find((x) => x.prompt_id === m.prompt_id);
    if (v !== undefined && m.from.includes(v.state)) v.state = m.to;
  }
  return { row: { ...s.row, ...(c.fields ?? {}), ...after }, variants };
}

type VariantAdd = { row: ExperimentRow; v: NonNullable<ExperimentChange['add']>[number] };
/** A history line and the experiment generation it belongs to. */
/** A history line to write; `entryId`, a snapshot's entry id through group commit (stored once however often it is replayed). */
export type HistoryAdd = { row: ExperimentKey & { generation: number }; h: HistoryEntry; entryId?: string };

/** experiment_variants' columns as a change writes them. */
const VARIANT_COLUMNS: ReadonlyArray<UnnestColumn<VariantAdd>> = [
  { name: 'name', type: 'text', value: (a) => a.row.name },
  { name: 'model', type: 'text', value: (a) => a.row.model },
  { name: 'generation', type: 'int4', value: (a) => a.row.generation },
  { name: 'prompt_id', type: 'text', value: (a) => a.v.prompt_id },
  { name: 'text', type: 'text', value: (a) => a.v.text },
  { name: 'origin', type: 'text', value: (a) => a.v.origin },
  { name: 'prior_alpha', type: 'float8', value: (a) => a.v.prior_alpha },
  { name: 'prior_beta', type: 'float8', value: (a) => a.v.prior_beta },
  { name: 'predicted', type: 'float8', value: (a) => a.v.predicted },
  { name: 'state', type: 'text', value: (a) => a.v.state },
  { name: 'rank', type: 'float8', value: (a) => a.v.rank },
];

/** experiment_history's columns as a change writes them. */
const HISTORY_COLUMNS: ReadonlyArray<UnnestColumn<HistoryAdd>> = [
  { name: 'name', type: 'text', value: (x) => x.row.name },
  { name: 'model', type: 'text', value: (x) => x.row.model },
  { name: 'generation', type: 'int4', value: (x) => x.row.generation },
  { name: 'kind', type: 'text', value: (x) => x.h.kind },
  { name: 'prompt_id', type: 'text', value: (x) => x.h.prompt_id },
  { name: 'outcomes', type: 'int8', value: (x) => x.h.outcomes },
  { name: 'successes', type: 'int8', value: (x) => x.h.successes },
  { name: 'variants', type: 'jsonb', value: (x) => (x.h.variants === null ? null : JSON.stringify(x.h.variants)) },
  { name: 'entry_id', type: 'uuid', value: (x) => x.entryId ?? null },
];

/** History lines as one INSERT, its array parameters numbered from `firstParam` (to go inside another statement). */
export function historyInsert(history: readonly HistoryAdd[], firstParam = 1): { sql: string; params: SqlParam[] } {
  return unnestInsert('experiment_history', HISTORY_COLUMNS, history, 'ON CONFLICT (entry_id) DO NOTHING', firstParam);
}

/** History lines in one insert (a change's, or snapshots through group commit). */
export async function writeHistory(q: Query, history: readonly HistoryAdd[]): Promise<void> {
  if (history.length === 0) return;
  const st = historyInsert(history);
  await q(st.sql, st.params);
}

/** The changes' new variants (one insert) and state moves (one update; each only from the states it lists). */
async function applyVariants(
  q: Query,
  adds: ReadonlyArray<VariantAdd>,
  moves: ReadonlyArray<{ row: ExperimentRow; m: NonNullable<ExperimentChange['moves']>[number] }>,
): Promise<void> {
  if (adds.length > 0) {
    const st = unnestInsert('experiment_variants', VARIANT_COLUMNS, adds, 'ON CONFLICT (name, model, generation, prompt_id) DO NOTHING');
    await q(st.sql, st.params);
  }
  if (moves.length > 0)
    // The allowed states comma-joined (no state has a comma).
    await q(
      `UPDATE experiment_variants v SET state = m.to_state
         FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[], $6::text[]) AS m(name, model, generation, prompt_id, to_state, from_states)
        WHERE v.name = m.name AND v.model = m.model AND v.generation = m.generation AND v.prompt_id = m.prompt_id AND v.state = ANY(string_to_array(m.from_states, ','))`,
      [moves.map((x) => x.row.name), moves.map((x) => x.row.model), moves.map((x) => x.row.generation), moves.map((x) => x.m.prompt_id), moves.map((x) => x.m.to), moves.map((x) => x.m.from.join(','))],
    );
}

/**
 * A new generation, applied only when it is newer than the stored one (two
 * sidecars that see the same new base at once write it once; a write
 * replayed from the journal after a newer one is a no-op). Its base variant
 * is written only with it. Returns whether it was applied.
 */
export async function writeGeneration(q: Query, g: GenerationWrite): Promise<boolean> {
  const b = g.base;
  const rows = await q(
    `WITH e AS (
       INSERT INTO experiments AS x (name, model, generation, base_prompt_id, status, pinned_prompt_id, proposals_made, leader_prompt_id, outcomes_at_last_batch, revision, objective)
       VALUES ($1, $2, $3, $4, 'running', NULL, 0, $4, 0, 1, $10::jsonb)
       ON CONFLICT (name, model) DO UPDATE SET generation = excluded.generation, base_prompt_id = excluded.base_prompt_id, status = 'running',
         pinned_prompt_id = NULL, proposals_made = 0, leader_prompt_id = excluded.leader_prompt_id, outcomes_at_last_batch = 0,
         revision = x.revision + 1, updated_at = now(), objective = excluded.objective
       WHERE x.generation < excluded.generation
       RETURNING name)
     INSERT INTO experiment_variants (name, model, generation, prompt_id, text, origin, prior_alpha, prior_beta, predicted, state)
     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, 'active' FROM e
     ON CONFLICT (name, model, generation, prompt_id) DO NOTHING
     RETURNING prompt_id`,
    [g.name, g.model, g.generation, b.prompt_id, b.text, b.origin, b.prior_alpha, b.prior_beta, b.predicted, JSON.stringify(g.objective)],
  );
  return rows.length > 0;
}

function toExperiment(r: Row): ExperimentRow {
  return {
    name: String(r.name),
    model: String(r.model),
    generation: Number(r.generation),
    base_prompt_id: String(r.base_prompt_id),
    status: r.status === 'stopped' ? 'stopped' : 'running',
    pinned_prompt_id: r.pinned_prompt_id === null || r.pinned_prompt_id === undefined ? null : String(r.pinned_prompt_id),
    proposals_made: Number(r.proposals_made),
    leader_prompt_id: r.leader_prompt_id === null || r.leader_prompt_id === undefined ? null : String(r.leader_prompt_id),
    objective: objectiveOf(r.objective),
    outcomes_at_last_batch: Number(r.outcomes_at_last_batch ?? 0),
    revision: Number(r.revision ?? 0),
    updated_at: isoOf(r.updated_at),
  };
}

/** Every counted aggregate of a row (missing ones: 0). */
export function totalsOf(r: Readonly<Record<string, unknown>>): VariantTotals {
  const t = { ...NO_TOTALS };
  for (const k of TOTALS_KEYS) t[k] = Number(r[k] ?? 0);
  return t;
}

/** A stored objective, the defaults filling what it leaves out. */
export function objectiveOf(v: unknown): Objective {
  const o = (v !== null && typeof v === 'object' ? v : {}) as Partial<Objective>;
  const kind = o.kind === 'score' || o.kind === 'reward' ? o.kind : 'success';
  const n = (x: unknown): number => (typeof x === 'number' && Number.isFinite(x) ? x : 0);
  const bound = (x: unknown): number | null => (typeof x === 'number' && Number.isFinite(x) ? x : null);
  return { kind, cost_weight: n(o.cost_weight), input_token_cost: n(o.input_token_cost), output_token_cost: n(o.output_token_cost), max_latency_ms_p90: bound(o.max_latency_ms_p90), max_cost_per_call: bound(o.max_cost_per_call) };
}

const isoOf = (v: unknown): string => (v instanceof Date ? v.toISOString() : String(v));

const STATES: readonly VariantState[] = ['active', 'retired', 'banned', 'reserve'];

function toCounts(r: Row): VariantCounts {
  const state = String(r.state) as VariantState;
  return { prompt_id: String(r.prompt_id), state: STATES.includes(state) ? state : 'active', ...totalsOf(r) };
}

function toVariant(r: Row): VariantRow {
  const origin = String(r.origin);
  return {
    ...toCounts(r),
    text: String(r.text),
    origin: origin === 'llm' || origin === 'offline' ? origin : 'base',
    prior_alpha: Number(r.prior_alpha),
    prior_beta: Number(r.prior_beta),
    predicted: r.predicted === null || r.predicted === undefined ? null : Number(r.predicted),
    rank: r.rank === null || r.rank === undefined ? null : Number(r.rank),
  };
}
