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
import type { Query, Row, SqlClient } from './db.js';

export type VariantOrigin = 'base' | 'offline' | 'llm';
/** `reserve`: screened, not yet served; `active`: served; `retired`/`banned`: no longer served. */
export type VariantState = 'active' | 'retired' | 'banned' | 'reserve';
export type ExperimentStatus = 'running' | 'stopped';

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
  /** Outcomes of the generation when the last proposal batch was made. */
  outcomes_at_last_batch: number;
  revision: number;
  updated_at: string;
}

export interface VariantCounts {
  prompt_id: string;
  state: VariantState;
  successes: number;
  count: number;
}

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
  base: Omit<VariantRow, 'state' | 'successes' | 'count' | 'rank'>;
}

/** One change to an experiment, applied in one locked transaction by `change`. */
export interface ExperimentChange {
  fields?: Partial<Pick<ExperimentRow, 'status' | 'pinned_prompt_id' | 'proposals_made' | 'leader_prompt_id' | 'outcomes_at_last_batch'>>;
  /** New variants (into the pool or the reserve); one already a variant of the generation is left as it is. */
  add?: Array<Omit<VariantRow, 'successes' | 'count'>>;
  /** State moves, each applied only from the states it lists (a decision made on a stale view, or replayed, changes nothing). */
  moves?: Array<{ prompt_id: string; from: readonly VariantState[]; to: VariantState }>;
  /** Tracking entries written with the change (a retirement's A/B result, a leader change's evolution). */
  entries?: EntryRow[];
  /** Reset: a new generation from this base, instead of the fields and variants above. */
  generation?: GenerationWrite;
}

/** What the loop announces on its channel: the sender, and the experiments that changed (`all` when too many to list). */
export interface LoopNotice {
  s: string;
  k?: Array<[string, string]>;
  all?: true;
  hb?: number;
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
  const text = JSON.stringify({ s: sender, k } satisfies LoopNotice);
  return Buffer.byteLength(text) <= MAX_NOTICE_BYTES ? text : JSON.stringify({ s: sender, all: true } satisfies LoopNotice);
}

const EXPERIMENT_COLUMNS = `e.name, e.model, e.generation, e.base_prompt_id, e.status, e.pinned_prompt_id, e.proposals_made, e.leader_prompt_id, e.outcomes_at_last_batch, e.revision, e.updated_at`;

/** Variants of each selected experiment's current generation, with counts, as one JSON array per experiment. */
const variantsJson = (withText: boolean): string => `(
  SELECT coalesce(json_agg(json_build_object(
           'prompt_id', v.prompt_id, 'state', v.state, 'successes', coalesce(c.successes, 0), 'count', coalesce(c.count, 0)
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
    const rows = await this.select(this.db.query.bind(this.db), true, keys, limit, false);
    return rows.map((r) => ({ row: toExperiment(r), variants: (r.variants as Row[]).map(toVariant) }));
  }

  /** Rows and counts only (what a view refreshes). */
  async counts(keys?: readonly ExperimentKey[], limit = 10_000): Promise<ExperimentCounts[]> {
    await this.migrate();
    const rows = await this.select(this.db.query.bind(this.db), false, keys, limit, false);
    return rows.map((r) => ({ row: toExperiment(r), counts: (r.variants as Row[]).map(toCounts) }));
  }

  /** Every (experiment, model) of one name, with texts. */
  async named(name: string): Promise<ExperimentSnapshot[]> {
    await this.migrate();
    const rows = await this.db.query(`SELECT ${EXPERIMENT_COLUMNS}, ${variantsJson(true)} FROM experiments e WHERE e.name = $1 ORDER BY e.model`, [name]);
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
  async change(
    tx: <T>(fn: (q: Query) => Promise<T>) => Promise<T>,
    key: ExperimentKey & { generation?: number },
    decide: (s: ExperimentSnapshot) => ExperimentChange | undefined,
    writeEntries: (q: Query, rows: EntryRow[]) => Promise<void>,
  ): Promise<ExperimentSnapshot | undefined> {
    await this.migrate();
    return tx(async (q) => {
      const found = (await this.select(q, true, [key], 1, true))[0];
      if (found === undefined) return undefined;
      const snap: ExperimentSnapshot = { row: toExperiment(found), variants: (found.variants as Row[]).map(toVariant) };
      if (key.generation !== undefined && snap.row.generation !== key.generation) return undefined;
      const c = decide(snap);
      if (c === undefined) return snap;
      if (c.generation !== undefined) await writeGeneration(q, c.generation);
      else await applyChange(q, snap.row, c);
      if (c.entries !== undefined && c.entries.length > 0) await writeEntries(q, c.entries);
      const notice = loopNotice(this.notice.sender, [key]);
      if (c.generation === undefined)
        await q(`UPDATE experiments SET revision = revision + 1, updated_at = now() WHERE name = $1 AND model = $2 RETURNING pg_notify($3, $4)`, [key.name, key.model, this.notice.channel, notice]);
      else await q('SELECT pg_notify($1, $2)', [this.notice.channel, notice]);
      // What the store now holds; texts it already had, or that the change brought, are not read again.
      const after = (await this.select(q, false, [key], 1, false))[0]!;
      const texts = new Map<string, Omit<VariantRow, keyof VariantCounts>>();
      for (const v of [...snap.variants, ...(c.add ?? []), ...(c.generation === undefined ? [] : [{ ...c.generation.base, rank: null }])]) texts.set(v.prompt_id, v);
      return { row: toExperiment(after), variants: (after.variants as Row[]).map(toCounts).map((k) => ({ ...texts.get(k.prompt_id)!, ...k })) };
    });
  }

  /** The text of a prompt any experiment has tried (the trainer's fallback when an execution carries no text). */
  async variantTexts(): Promise<Map<string, { text: string; experiment: string; model: string }>> {
    const rows = await this.db.query(`SELECT DISTINCT ON (prompt_id) prompt_id, text, name, model FROM experiment_variants WHERE state <> 'reserve' ORDER BY prompt_id, seq`);
    return new Map(rows.map((r) => [String(r.prompt_id), { text: String(r.text), experiment: String(r.name), model: String(r.model) }]));
  }
}

async function applyChange(q: Query, row: ExperimentRow, c: ExperimentChange): Promise<void> {
  const f = c.fields ?? {};
  const sets = Object.keys(f) as Array<keyof typeof f>;
  if (sets.length > 0)
    await q(`UPDATE experiments SET ${sets.map((k, i) => `${k} = $${i + 3}`).join(', ')} WHERE name = $1 AND model = $2`, [row.name, row.model, ...sets.map((k) => f[k] ?? null)]);
  if (c.add !== undefined && c.add.length > 0) {
    const a = c.add;
    await q(
      `INSERT INTO experiment_variants (name, model, generation, prompt_id, text, origin, prior_alpha, prior_beta, predicted, state, rank)
       SELECT $1, $2, $3, * FROM unnest($4::text[], $5::text[], $6::text[], $7::float8[], $8::float8[], $9::float8[], $10::text[], $11::float8[])
       ON CONFLICT (name, model, generation, prompt_id) DO NOTHING`,
      [
        row.name,
        row.model,
        row.generation,
        a.map((v) => v.prompt_id),
        a.map((v) => v.text),
        a.map((v) => v.origin),
        a.map((v) => v.prior_alpha),
        a.map((v) => v.prior_beta),
        a.map((v) => v.predicted),
        a.map((v) => v.state),
        a.map((v) => v.rank),
      ],
    );
  }
  const moves = c.moves ?? [];
  if (moves.length > 0)
    // One statement for every move; each applies only from the states it lists (comma-joined, no state has a comma).
    await q(
      `UPDATE experiment_variants v SET state = m.to_state
         FROM unnest($4::text[], $5::text[], $6::text[]) AS m(prompt_id, to_state, from_states)
        WHERE v.name = $1 AND v.model = $2 AND v.generation = $3 AND v.prompt_id = m.prompt_id AND v.state = ANY(string_to_array(m.from_states, ','))`,
      [row.name, row.model, row.generation, moves.map((m) => m.prompt_id), moves.map((m) => m.to), moves.map((m) => m.from.join(','))],
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
       INSERT INTO experiments AS x (name, model, generation, base_prompt_id, status, pinned_prompt_id, proposals_made, leader_prompt_id, outcomes_at_last_batch, revision)
       VALUES ($1, $2, $3, $4, 'running', NULL, 0, $4, 0, 1)
       ON CONFLICT (name, model) DO UPDATE SET generation = excluded.generation, base_prompt_id = excluded.base_prompt_id, status = 'running',
         pinned_prompt_id = NULL, proposals_made = 0, leader_prompt_id = excluded.leader_prompt_id, outcomes_at_last_batch = 0,
         revision = x.revision + 1, updated_at = now()
       WHERE x.generation < excluded.generation
       RETURNING name)
     INSERT INTO experiment_variants (name, model, generation, prompt_id, text, origin, prior_alpha, prior_beta, predicted, state)
     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, 'active' FROM e
     ON CONFLICT (name, model, generation, prompt_id) DO NOTHING
     RETURNING prompt_id`,
    [g.name, g.model, g.generation, b.prompt_id, b.text, b.origin, b.prior_alpha, b.prior_beta, b.predicted],
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
    outcomes_at_last_batch: Number(r.outcomes_at_last_batch ?? 0),
    revision: Number(r.revision ?? 0),
    updated_at: r.updated_at instanceof Date ? r.updated_at.toISOString() : String(r.updated_at),
  };
}

const STATES: readonly VariantState[] = ['active', 'retired', 'banned', 'reserve'];

function toCounts(r: Row): VariantCounts {
  const state = String(r.state) as VariantState;
  return { prompt_id: String(r.prompt_id), state: STATES.includes(state) ? state : 'active', successes: Number(r.successes), count: Number(r.count) };
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
