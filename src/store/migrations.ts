/**
 * The store's tables, as versioned migrations shared by PostgreSQL and
 * PGlite, applied inside the store's own schema (`search_path`). Kept as
 * TypeScript strings (not .sql files) so the compiled `dist/` carries them.
 * Applied in order under an advisory lock; each version once.
 */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/**
 * The per-variant aggregates the counting triggers move, in the order their
 * notice answers them (after name, model, generation, prompt id). Frozen
 * with migration 9, which uses it: a later aggregate comes with a migration
 * of its own (test/store.test.ts checks it matches the store's totals).
 */
export const COUNTED_COLUMNS = ['successes', 'count', 'scored', 'score_sum', 'score_sq', 'cost_n', 'cost_sum', 'cost_sq', 'tokens_n', 'tokens_in', 'tokens_out', 'latency_sum', 'latency_sq', 'over_latency'] as const;
const COUNTED_TYPES: Record<(typeof COUNTED_COLUMNS)[number], string> = {
  successes: 'bigint', count: 'bigint', scored: 'bigint', score_sum: 'float8', score_sq: 'float8', cost_n: 'bigint', cost_sum: 'float8', cost_sq: 'float8',
  tokens_n: 'bigint', tokens_in: 'bigint', tokens_out: 'bigint', latency_sum: 'float8', latency_sq: 'float8', over_latency: 'bigint',
};

/** Add per-variant sums (`source`: rows of name, model, generation, prompt id, then COUNTED_COLUMNS) in key order (two batches moving the same variants lock them in the same order and never deadlock). */
const upsertCounts = (source: string): string => `INSERT INTO experiment_counts AS c (name, model, generation, prompt_id, ${COUNTED_COLUMNS.join(', ')})
    ${source}
     ORDER BY 1, 2, 3, 4
    ON CONFLICT (name, model, generation, prompt_id) DO UPDATE SET ${COUNTED_COLUMNS.map((c) => `${c} = c.${c} + excluded.${c}`).join(', ')}
    RETURNING c.*`;

/** The totals after an upsert (upd) as one JSON array per variant, and the experiments it moved. */
const totalsInto = `SELECT json_agg(json_build_array(u.name, u.model, u.generation, u.prompt_id, ${COUNTED_COLUMNS.map((c) => `u.${c}`).join(', ')}))::text,
         jsonb_agg(DISTINCT jsonb_build_array(u.name, u.model))::text
    INTO totals, keys FROM upd u;`;

/**
 * The executions a statement inserted (its transition table, `inserted`),
 * summed per variant: only the rows inserted now (a repeated id, skipped by
 * ON CONFLICT, is not there), each counted for the variant its metadata
 * names (without a generation: the experiment's current one), whether or
 * not the variant is stored yet (journals replay in any order after an
 * outage; counts of variants the loop does not know are never read). A call
 * without a score counts its success as its score; a call slower than the
 * experiment's latency bound counts as over it. Columns: name, model,
 * generation, prompt_id, then COUNTED_COLUMNS. Used by migrations 7 and 9:
 * frozen with them (a change is a new migration).
 */
const EXECUTIONS_BY_VARIANT = `
    SELECT o.name, o.model, coalesce(o.generation, e.generation) AS generation, o.prompt_id,
           count(*) FILTER (WHERE o.success) AS successes, count(*) AS count, count(*) AS scored,
           sum(o.s) AS score_sum, sum(o.s * o.s) AS score_sq,
           count(o.cost) AS cost_n, coalesce(sum(o.cost), 0) AS cost_sum, coalesce(sum(o.cost * o.cost), 0) AS cost_sq,
           count(*) FILTER (WHERE o.input_tokens IS NOT NULL OR o.output_tokens IS NOT NULL) AS tokens_n,
           coalesce(sum(o.input_tokens), 0) AS tokens_in, coalesce(sum(o.output_tokens), 0) AS tokens_out,
           sum(o.ms) AS latency_sum, sum(o.ms * o.ms) AS latency_sq,
           count(*) FILTER (WHERE o.ms > (e.objective->>'max_latency_ms_p90')::float8) AS over_latency
      FROM (SELECT n.metadata->>'experiment' AS name, coalesce(n.metadata->>'model', 'default') AS model,
                   CASE WHEN n.metadata->>'generation' ~ '^[0-9]{1,9}$' THEN (n.metadata->>'generation')::int END AS generation,
                   n.prompt_id, n.success, coalesce(n.score, n.success::int)::float8 AS s, n.cost, n.input_tokens, n.output_tokens,
                   n.execution_time_ms::float8 AS ms
              FROM inserted n WHERE n.metadata ? 'experiment') o
      LEFT JOIN experiments e ON e.name = o.name AND e.model = o.model
     GROUP BY 1, 2, 3, 4`;

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'tracking tables',
    sql: `
CREATE TABLE IF NOT EXISTS prompt_executions (
  id uuid PRIMARY KEY,
  seq bigserial NOT NULL,
  prompt_id text NOT NULL,
  execution_time_ms integer NOT NULL CHECK (execution_time_ms >= 0),
  success boolean NOT NULL,
  confidence_score double precision,
  context_signature text,
  response_length integer,
  "timestamp" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS prompt_executions_prompt_ts ON prompt_executions (prompt_id, "timestamp");
CREATE INDEX IF NOT EXISTS prompt_executions_seq ON prompt_executions (seq);

CREATE TABLE IF NOT EXISTS prompt_feedback (
  id uuid PRIMARY KEY,
  seq bigserial NOT NULL,
  prompt_id text NOT NULL,
  feedback_type text NOT NULL CHECK (feedback_type IN ('quality','accuracy','performance','usability','completeness','other')),
  rating double precision NOT NULL,
  comment text,
  user_id text,
  "timestamp" timestamptz NOT NULL,
  context jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS prompt_feedback_ts ON prompt_feedback ("timestamp");
CREATE INDEX IF NOT EXISTS prompt_feedback_prompt ON prompt_feedback (prompt_id);

CREATE TABLE IF NOT EXISTS prompt_evolutions (
  id uuid PRIMARY KEY,
  seq bigserial NOT NULL,
  original_prompt_id text NOT NULL,
  evolved_prompt_id text NOT NULL,
  evolution_type text NOT NULL CHECK (evolution_type IN ('optimization','refinement','expansion','simplification','adaptation','other')),
  performance_improvement double precision NOT NULL,
  evolution_timestamp timestamptz NOT NULL,
  evolution_metadata jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS prompt_evolutions_original ON prompt_evolutions (original_prompt_id, evolution_timestamp);
CREATE INDEX IF NOT EXISTS prompt_evolutions_evolved ON prompt_evolutions (evolved_prompt_id);

CREATE TABLE IF NOT EXISTS ab_test_results (
  id uuid PRIMARY KEY,
  seq bigserial NOT NULL,
  test_id text NOT NULL,
  variant_a_prompt_id text NOT NULL,
  variant_b_prompt_id text NOT NULL,
  winner text NOT NULL CHECK (winner IN ('a','b','tie')),
  confidence_level double precision NOT NULL,
  sample_size integer NOT NULL CHECK (sample_size >= 0),
  test_duration bigint NOT NULL CHECK (test_duration >= 0),
  test_timestamp timestamptz NOT NULL,
  metrics jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS ab_test_results_test ON ab_test_results (test_id);

CREATE TABLE IF NOT EXISTS context_signatures (
  id uuid PRIMARY KEY,
  seq bigserial NOT NULL,
  signature_hash text NOT NULL,
  project_tech_stack text[] NOT NULL DEFAULT '{}',
  project_type text NOT NULL,
  complexity_level text NOT NULL,
  created_at timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS context_signatures_hash ON context_signatures (signature_hash);
CREATE INDEX IF NOT EXISTS context_signatures_stack ON context_signatures USING gin (project_tech_stack);
`,
  },
  {
    version: 2,
    name: 'model registry',
    sql: `
CREATE TABLE IF NOT EXISTS models (
  version text PRIMARY KEY,
  feature_spec_hash text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  samples integer NOT NULL,
  metrics jsonb NOT NULL DEFAULT '{}'::jsonb,
  promoted boolean NOT NULL DEFAULT false,
  promoted_at timestamptz,
  path text NOT NULL
);
CREATE INDEX IF NOT EXISTS models_promoted ON models (promoted_at) WHERE promoted;
`,
  },
  {
    version: 3,
    // No index on executions' metadata: it would tax every tracked row; a restart counts
    // every experiment's outcomes in one scan instead.
    name: 'closed-loop experiments',
    sql: `
CREATE TABLE IF NOT EXISTS experiments (
  name text NOT NULL,
  model text NOT NULL,
  generation integer NOT NULL,
  base_prompt_id text NOT NULL,
  status text NOT NULL DEFAULT 'running',
  pinned_prompt_id text,
  proposals_made integer NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (name, model)
);
CREATE TABLE IF NOT EXISTS experiment_variants (
  name text NOT NULL,
  model text NOT NULL,
  generation integer NOT NULL,
  prompt_id text NOT NULL,
  text text NOT NULL,
  origin text NOT NULL,
  prior_alpha float8 NOT NULL,
  prior_beta float8 NOT NULL,
  predicted float8,
  state text NOT NULL DEFAULT 'active',
  seq bigserial NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (name, model, generation, prompt_id)
);
CREATE INDEX IF NOT EXISTS experiment_variants_prompt ON experiment_variants (prompt_id)
`,
  },
  {
    version: 4,
    // Model bytes in the registry, so every instance sharing the database can load the promoted model.
    name: 'model bytes in the registry',
    sql: `
ALTER TABLE models ADD COLUMN IF NOT EXISTS onnx bytea;
ALTER TABLE models ADD COLUMN IF NOT EXISTS meta jsonb;
ALTER TABLE models ALTER COLUMN path DROP NOT NULL
`,
  },
  {
    version: 5,
    // The closed loop's state shared by every sidecar on this database: per-variant outcome counts
    // (moved by the counting trigger of version 7 in the statement that stores each outcome, whatever
    // path stores it: a batch, COPY, a replayed journal); the leader, the batch trigger and a revision
    // per experiment; its history; screened candidates waiting in reserve are variant rows too.
    name: 'shared closed-loop state',
    sql: `
ALTER TABLE experiments ADD COLUMN IF NOT EXISTS leader_prompt_id text;
ALTER TABLE experiments ADD COLUMN IF NOT EXISTS outcomes_at_last_batch bigint NOT NULL DEFAULT 0;
ALTER TABLE experiments ADD COLUMN IF NOT EXISTS revision bigint NOT NULL DEFAULT 0;
ALTER TABLE experiment_variants ADD COLUMN IF NOT EXISTS rank double precision;
CREATE TABLE IF NOT EXISTS experiment_counts (
  name text NOT NULL,
  model text NOT NULL,
  generation integer NOT NULL,
  prompt_id text NOT NULL,
  successes bigint NOT NULL DEFAULT 0,
  count bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (name, model, generation, prompt_id)
);
CREATE TABLE IF NOT EXISTS experiment_history (
  name text NOT NULL,
  model text NOT NULL,
  generation integer NOT NULL,
  seq bigserial NOT NULL,
  kind text NOT NULL,
  prompt_id text,
  outcomes bigint NOT NULL,
  successes bigint NOT NULL,
  variants jsonb,
  at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (name, model, generation, seq)
);
INSERT INTO experiment_counts (name, model, generation, prompt_id, successes, count)
SELECT v.name, v.model, v.generation, v.prompt_id, count(*) FILTER (WHERE x.success), count(*)
  FROM experiment_variants v
  JOIN experiments e ON e.name = v.name AND e.model = v.model
  JOIN prompt_executions x ON x.prompt_id = v.prompt_id
   AND x.metadata->>'experiment' = v.name
   AND coalesce(x.metadata->>'model', 'default') = v.model
   AND coalesce(x.metadata->>'generation', e.generation::text) = v.generation::text
 GROUP BY 1, 2, 3, 4
ON CONFLICT DO NOTHING
`,
  },
  {
    version: 7,
    // Outcomes as teams measure them: a graded score, tokens, cost (and the latency every call already
    // has); an objective per experiment; per-variant aggregates of each, moved by the counting triggers
    // (executions, and ratings whose context names the choice: a late score).
    name: 'graded outcomes and objectives',
    sql: `
ALTER TABLE prompt_executions ADD COLUMN IF NOT EXISTS score double precision;
ALTER TABLE prompt_executions ADD COLUMN IF NOT EXISTS input_tokens integer;
ALTER TABLE prompt_executions ADD COLUMN IF NOT EXISTS output_tokens integer;
ALTER TABLE prompt_executions ADD COLUMN IF NOT EXISTS cost double precision;
ALTER TABLE experiments ADD COLUMN IF NOT EXISTS objective jsonb NOT NULL DEFAULT '{"kind":"success"}';
ALTER TABLE experiment_counts
  ADD COLUMN IF NOT EXISTS scored bigint NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS score_sum double precision NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS score_sq double precision NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS cost_n bigint NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS cost_sum double precision NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS cost_sq double precision NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS tokens_n bigint NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS tokens_in bigint NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS tokens_out bigint NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS latency_sum double precision NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS latency_sq double precision NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS over_latency bigint NOT NULL DEFAULT 0;
UPDATE experiment_counts SET scored = count, score_sum = successes, score_sq = successes WHERE scored = 0;
CREATE OR REPLACE FUNCTION count_loop_upsert(rows json) RETURNS json LANGUAGE plpgsql AS $$
DECLARE
  totals json;
  channel text := current_setting('prompt_engine.loop_channel', true);
BEGIN
  -- Add per-variant sums to experiment_counts in key order (two batches moving the same variants lock
  -- them in the same order and never deadlock); answer the totals after, and tell every sidecar which
  -- experiments moved (at commit). Shared by the counting triggers of executions and feedback.
  WITH upd AS (
    INSERT INTO experiment_counts AS c (name, model, generation, prompt_id, successes, count, scored, score_sum, score_sq,
                                        cost_n, cost_sum, cost_sq, tokens_n, tokens_in, tokens_out, latency_sum, latency_sq, over_latency)
    SELECT x.name, x.model, x.generation, x.prompt_id, x.successes, x.count, x.scored, x.score_sum, x.score_sq,
           x.cost_n, x.cost_sum, x.cost_sq, x.tokens_n, x.tokens_in, x.tokens_out, x.latency_sum, x.latency_sq, x.over_latency
      FROM json_to_recordset(rows) AS x(name text, model text, generation int, prompt_id text, successes bigint, count bigint, scored bigint,
           score_sum float8, score_sq float8, cost_n bigint, cost_sum float8, cost_sq float8, tokens_n bigint, tokens_in bigint, tokens_out bigint,
           latency_sum float8, latency_sq float8, over_latency bigint)
     WHERE x.generation IS NOT NULL
     ORDER BY 1, 2, 3, 4
    ON CONFLICT (name, model, generation, prompt_id) DO UPDATE SET
      successes = c.successes + excluded.successes, count = c.count + excluded.count, scored = c.scored + excluded.scored,
      score_sum = c.score_sum + excluded.score_sum, score_sq = c.score_sq + excluded.score_sq, cost_n = c.cost_n + excluded.cost_n,
      cost_sum = c.cost_sum + excluded.cost_sum, cost_sq = c.cost_sq + excluded.cost_sq, tokens_n = c.tokens_n + excluded.tokens_n,
      tokens_in = c.tokens_in + excluded.tokens_in, tokens_out = c.tokens_out + excluded.tokens_out,
      latency_sum = c.latency_sum + excluded.latency_sum, latency_sq = c.latency_sq + excluded.latency_sq,
      over_latency = c.over_latency + excluded.over_latency
    RETURNING c.*)
  SELECT json_agg(row_to_json(u)) INTO totals FROM upd u;
  IF totals IS NULL THEN
    RETURN NULL;
  END IF;
  -- The totals to the writing session (a notice read with the reply), the experiments that moved to every sidecar.
  RAISE NOTICE 'prompt_engine_counts %', totals;
  IF channel IS NOT NULL AND channel <> '' THEN
    PERFORM pg_notify(channel, json_build_object('s', current_setting('prompt_engine.instance', true),
      'k', (SELECT json_agg(DISTINCT jsonb_build_array(t->>'name', t->>'model')) FROM json_array_elements(totals) AS t))::text);
  END IF;
  RETURN totals;
END
$$;
CREATE OR REPLACE FUNCTION count_loop_outcomes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- EXECUTIONS_BY_VARIANT (migrations.ts) says what is counted, and how.
  PERFORM count_loop_upsert((SELECT json_agg(a) FROM (${EXECUTIONS_BY_VARIANT}) a));
  RETURN NULL;
END
$$;
CREATE TRIGGER prompt_executions_count_loop_outcomes AFTER INSERT ON prompt_executions
  REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION count_loop_outcomes();
CREATE OR REPLACE FUNCTION count_loop_feedback() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- A rating whose context names a choice (its experiment, model, generation) is a late score of that choice's
  -- variant: rating / 5, clamped to 0..1, as the trainer reads ratings.
  PERFORM count_loop_upsert((
    SELECT json_agg(a) FROM (
      SELECT o.name, o.model, coalesce(o.generation, e.generation) AS generation, o.prompt_id,
             0 AS successes, 0 AS count, count(*) AS scored, sum(o.s) AS score_sum, sum(o.s * o.s) AS score_sq,
             0 AS cost_n, 0 AS cost_sum, 0 AS cost_sq, 0 AS tokens_n, 0 AS tokens_in, 0 AS tokens_out, 0 AS latency_sum, 0 AS latency_sq, 0 AS over_latency
        FROM (SELECT n.context->>'experiment' AS name, coalesce(n.context->>'model', 'default') AS model,
                     CASE WHEN n.context->>'generation' ~ '^[0-9]{1,9}$' THEN (n.context->>'generation')::int END AS generation,
                     n.prompt_id, least(1, greatest(0, n.rating / 5.0)) AS s
                FROM inserted n WHERE n.context ? 'experiment') o
        LEFT JOIN experiments e ON e.name = o.name AND e.model = o.model
       GROUP BY 1, 2, 3, 4) a));
  RETURN NULL;
END
$$;
CREATE TRIGGER prompt_feedback_count_loop_feedback AFTER INSERT ON prompt_feedback
  REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION count_loop_feedback()
`,
  },
  {
    version: 8,
    // Prompt embeddings, computed once per (embedding model, prompt id) for every sidecar on this database
    // (learning/embeddings.ts encodes the vector); a new embedding model has no rows and recomputes.
    name: 'prompt embeddings',
    sql: `
CREATE TABLE IF NOT EXISTS embeddings (
  model text NOT NULL,
  prompt_id text NOT NULL,
  vector bytea NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (model, prompt_id)
)
`,
  },
  {
    version: 9,
    // The counting triggers made cheaper (the hot path's cost in PostgreSQL: bench/loopPort.ts): executions
    // aggregated and upserted in one statement instead of through JSON, the totals answered as arrays in
    // COUNTED_COLUMNS order under a notice name of their own (a sidecar of an older version ignores it and
    // reads the counts at its next refresh), a NOTIFY that names every experiment a batch moved only while it
    // fits PostgreSQL's payload limit ("all" past it: such a batch failed before), and room left on each page
    // of experiment_counts so its updates stay HOT (each outcome rewrites its variant's row).
    name: 'cheaper counting',
    sql: `
ALTER TABLE experiment_counts SET (fillfactor = 20);
CREATE OR REPLACE FUNCTION count_loop_announce(totals text, keys text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  channel text := current_setting('prompt_engine.loop_channel', true);
  payload text;
BEGIN
  -- The totals to the writing session (a notice read with the reply), the experiments that moved to every sidecar (at commit).
  RAISE NOTICE 'prompt_engine_totals %', totals;
  IF channel IS NOT NULL AND channel <> '' THEN
    payload := '{"s":' || to_json(coalesce(current_setting('prompt_engine.instance', true), ''))::text || ',"k":' || keys || '}';
    IF octet_length(payload) > 7000 THEN
      payload := '{"s":' || to_json(coalesce(current_setting('prompt_engine.instance', true), ''))::text || ',"all":true}';
    END IF;
    PERFORM pg_notify(channel, payload);
  END IF;
END
$$;
CREATE OR REPLACE FUNCTION count_loop_upsert(rows json) RETURNS json LANGUAGE plpgsql AS $$
DECLARE
  totals text;
  keys text;
BEGIN
  -- Ratings that name a choice (count_loop_feedback); executions count in count_loop_outcomes, in one statement.
  WITH upd AS (
    ${upsertCounts(`SELECT x.name, x.model, x.generation, x.prompt_id, ${COUNTED_COLUMNS.map((c) => `x.${c}`).join(', ')}
      FROM json_to_recordset(rows) AS x(name text, model text, generation int, prompt_id text, ${COUNTED_COLUMNS.map((c) => `${c} ${COUNTED_TYPES[c]}`).join(', ')})
     WHERE x.generation IS NOT NULL`)})
  ${totalsInto}
  IF totals IS NULL THEN
    RETURN NULL;
  END IF;
  PERFORM count_loop_announce(totals, keys);
  RETURN totals::json;
END
$$;
CREATE OR REPLACE FUNCTION count_loop_outcomes() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  totals text;
  keys text;
BEGIN
  -- EXECUTIONS_BY_VARIANT (migrations.ts) says what is counted, and how.
  WITH a AS (${EXECUTIONS_BY_VARIANT}),
  upd AS (
    ${upsertCounts(`SELECT * FROM a WHERE a.generation IS NOT NULL`)})
  ${totalsInto}
  IF totals IS NOT NULL THEN
    PERFORM count_loop_announce(totals, keys);
  END IF;
  RETURN NULL;
END
$$
`,
  },
  {
    version: 10,
    // A history snapshot written through group commit carries its entry's id: replayed twice from the journal
    // (the process stopped after the commit, before the journal was cleared), it is stored once, as entries are.
    name: 'history snapshots once',
    sql: `
ALTER TABLE experiment_history ADD COLUMN IF NOT EXISTS entry_id uuid;
CREATE UNIQUE INDEX IF NOT EXISTS experiment_history_entry ON experiment_history (entry_id);
`,
  },
  {
    version: 11,
    // The trainer reads the executions that carry a prompt's text, newest first (TrackingStore.trainingExecutions):
    // by this index it reads only those, however many closed-loop outcomes (which carry none) the table holds.
    name: 'executions with a text',
    sql: `
CREATE INDEX IF NOT EXISTS prompt_executions_with_text ON prompt_executions (seq) WHERE metadata ? 'prompt'
`,
  },
];

/** Every table the migrations create, with a column only ours has (to tell them from an app's own table of that name). */
export const OWN_TABLES: ReadonlyArray<{ table: string; marker: string }> = [
  { table: 'schema_migrations', marker: 'name' },
  { table: 'prompt_executions', marker: 'context_signature' },
  { table: 'prompt_feedback', marker: 'feedback_type' },
  { table: 'prompt_evolutions', marker: 'evolved_prompt_id' },
  { table: 'ab_test_results', marker: 'variant_b_prompt_id' },
  { table: 'context_signatures', marker: 'signature_hash' },
  { table: 'models', marker: 'feature_spec_hash' },
  { table: 'experiments', marker: 'base_prompt_id' },
  { table: 'experiment_variants', marker: 'prior_alpha' },
  { table: 'experiment_counts', marker: 'generation' },
  { table: 'experiment_history', marker: 'variants' },
  { table: 'embeddings', marker: 'vector' },
];