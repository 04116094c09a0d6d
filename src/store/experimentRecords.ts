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

  async saveExperiment(e: ExperimentRow): Promise<void> {
    await this.migrate();
    await this.db.query(
      `INSERT INTO experiments (name, model, generation, base_prompt_id, status, pinned_prompt_id, proposals_made) VALUES ($1, $2, $3, $4, $5, $6, $7)
       ON CONFLICT (name, model) DO UPDATE SET generation = $3, base_prompt_id = $4, status = $5, pinned_prompt_id = $6, proposals_made = $7, updated_at = now()`,
      [e.name, e.model, e.generation, e.base_prompt_id, e.status, e.pinned_prompt_id, e.proposals_made],
    );
  }

  async saveVariants(vs: readonly VariantRow[]): Promise<void> {
    if (vs.length === 0) return;
    await this.migrate();
    await this.db.transaction(async (q) => {
      for (const v of vs)
        await q(
          `INSERT INTO experiment_variants (name, model, generation, prompt_id, text, origin, prior_alpha, prior_beta, predicted, state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
           ON CONFLICT (name, model, generation, prompt_id) DO UPDATE SET state = $10`,
          [v.name, v.model, v.generation, v.prompt_id, v.text, v.origin, v.prior_alpha, v.prior_beta, v.predicted, v.state],
        );
    });
  }

  async setVariantState(name: string, model: string, generation: number, promptId: string, state: VariantState): Promise<void> {
    await this.db.query(`UPDATE experiment_variants SET state = $5 WHERE name = $1 AND model = $2 AND generation = $3 AND prompt_id = $4`, [name, model, generation, promptId, state]);
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
