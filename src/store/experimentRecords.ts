/**
 * The closed loop's durable state: each experiment (name, model) with its
 * current generation, status and pin, and every variant it has tried
 * (text, origin, prior, state). Outcomes are not stored here: they are the
 * ordinary `prompt_executions` rows whose metadata names the experiment,
 * counted back per variant when an experiment is loaded after a restart.
 */
import type { Row, SqlClient } from './db.js';

export type VariantOrigin = 'base' | 'offline' | 'llm';
export type VariantState = 'active' | 'retired' | 'banned';
export type ExperimentStatus = 'running' | 'stopped';

export interface ExperimentRow {
  name: string;
  model: string;
  generation: number;
  base_prompt_id: string;
  status: ExperimentStatus;
  pinned_prompt_id: string | null;
  proposals_made: number;
}

export interface VariantRow {
  name: string;
  model: string;
  generation: number;
  prompt_id: string;
  text: string;
  origin: VariantOrigin;
  prior_alpha: number;
  prior_beta: number;
  predicted: number | null;
  state: VariantState;
}

export class ExperimentRecords {
  constructor(
    private readonly db: SqlClient,
    private readonly migrate: () => Promise<void>,
  ) {}

  /**
   * Upsert experiments and variants in one transaction (the closed loop
   * flushes its changes in groups, like the tracking writes): a variant's
   * text, origin and prior never change after it is written; its state does.
   */
  async saveState(experiments: readonly ExperimentRow[], variants: readonly VariantRow[]): Promise<void> {
    if (experiments.length === 0 && variants.length === 0) return;
    await this.migrate();
    await this.db.transaction(async (q) => {
      if (experiments.length > 0)
        await q(
          `INSERT INTO experiments (name, model, generation, base_prompt_id, status, pinned_prompt_id, proposals_made)
           SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[], $6::text[], $7::int4[])
           ON CONFLICT (name, model) DO UPDATE SET generation = excluded.generation, base_prompt_id = excluded.base_prompt_id, status = excluded.status,
             pinned_prompt_id = excluded.pinned_prompt_id, proposals_made = excluded.proposals_made, updated_at = now()`,
          [
            experiments.map((e) => e.name),
            experiments.map((e) => e.model),
            experiments.map((e) => e.generation),
            experiments.map((e) => e.base_prompt_id),
            experiments.map((e) => e.status),
            experiments.map((e) => e.pinned_prompt_id),
            experiments.map((e) => e.proposals_made),
          ],
        );
      if (variants.length > 0)
        await q(
          `INSERT INTO experiment_variants (name, model, generation, prompt_id, text, origin, prior_alpha, prior_beta, predicted, state)
           SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[], $6::text[], $7::float8[], $8::float8[], $9::float8[], $10::text[])
           ON CONFLICT (name, model, generation, prompt_id) DO UPDATE SET state = excluded.state`,
          [
            variants.map((v) => v.name),
            variants.map((v) => v.model),
            variants.map((v) => v.generation),
            variants.map((v) => v.prompt_id),
            variants.map((v) => v.text),
            variants.map((v) => v.origin),
            variants.map((v) => v.prior_alpha),
            variants.map((v) => v.prior_beta),
            variants.map((v) => v.predicted),
            variants.map((v) => v.state),
          ],
        );
    });
  }

  async loadExperiments(): Promise<ExperimentRow[]> {
    await this.migrate();
    return (await this.db.query(`SELECT name, model, generation, base_prompt_id, status, pinned_prompt_id, proposals_made FROM experiments ORDER BY name, model`)).map((r) => ({
      name: String(r.name),
      model: String(r.model),
      generation: Number(r.generation),
      base_prompt_id: String(r.base_prompt_id),
      status: r.status === 'stopped' ? 'stopped' : 'running',
      pinned_prompt_id: r.pinned_prompt_id === null ? null : String(r.pinned_prompt_id),
      proposals_made: Number(r.proposals_made),
    }));
  }

  async loadVariants(name: string, model: string, generation: number): Promise<VariantRow[]> {
    const rows = await this.db.query(`SELECT * FROM experiment_variants WHERE name = $1 AND model = $2 AND generation = $3 ORDER BY seq`, [name, model, generation]);
    return rows.map(toVariant);
  }

  /**
   * Outcomes per (experiment, model, generation, prompt id), counted from the
   * tracked executions in one scan (a restart loads every experiment at once).
   * Key: `name \0 model \0 generation`; executions without a generation count
   * for the experiment's current one.
   */
  async allOutcomes(): Promise<Map<string, Map<string, { successes: number; count: number }>>> {
    const rows = await this.db.query(
      `SELECT metadata->>'experiment' AS name, coalesce(metadata->>'model', 'default') AS model, metadata->>'generation' AS generation, prompt_id,
              count(*)::int AS count, sum(CASE WHEN success THEN 1 ELSE 0 END)::int AS successes
         FROM prompt_executions
        WHERE metadata ? 'experiment'
        GROUP BY 1, 2, 3, 4`,
    );
    const out = new Map<string, Map<string, { successes: number; count: number }>>();
    for (const r of rows) {
      const key = `${String(r.name)}\u0000${String(r.model)}\u0000${r.generation === null ? '*' : String(r.generation)}`;
      let m = out.get(key);
      if (m === undefined) out.set(key, (m = new Map()));
      m.set(String(r.prompt_id), { count: Number(r.count), successes: Number(r.successes) });
    }
    return out;
  }

  /** The text of a prompt any experiment has tried (the trainer's fallback when an execution carries no text). */
  async variantTexts(): Promise<Map<string, { text: string; experiment: string; model: string }>> {
    const rows = await this.db.query(`SELECT DISTINCT ON (prompt_id) prompt_id, text, name, model FROM experiment_variants ORDER BY prompt_id, seq`);
    return new Map(rows.map((r) => [String(r.prompt_id), { text: String(r.text), experiment: String(r.name), model: String(r.model) }]));
  }
}

function toVariant(r: Row): VariantRow {
  const origin = String(r.origin);
  const state = String(r.state);
  return {
    name: String(r.name),
    model: String(r.model),
    generation: Number(r.generation),
    prompt_id: String(r.prompt_id),
    text: String(r.text),
    origin: origin === 'llm' || origin === 'offline' ? origin : 'base',
    prior_alpha: Number(r.prior_alpha),
    prior_beta: Number(r.prior_beta),
    predicted: r.predicted === null || r.predicted === undefined ? null : Number(r.predicted),
    state: state === 'retired' || state === 'banned' ? state : 'active',
  };
}
