/**
 * The seven query kinds of the `query` op, as SQL over the tracking tables,
 * and the per-prompt aggregate they share with `prompt_stats`.
 */
import type { TermObject } from '../codec/terms.js';
import type { Row, SqlClient, SqlParam } from './db.js';
import { TABLES, type EntryKind } from './entries.js';
import { aggregateRecord, toRecord } from './rowTerms.js';

export const QUERY_KINDS = ['by_id', 'similar', 'by_tech_stack', 'prompt_executions', 'recent_feedback', 'evolution_history', 'high_performance'] as const;
export type QueryKind = (typeof QUERY_KINDS)[number];

export interface QueryArgs {
  id?: string;
  promptId?: string;
  techStack?: string[];
  projectType?: string;
  sinceMs?: number;
  minSuccessRate?: number;
  minCount?: number;
  limit: number;
}

export interface PromptAggregate {
  count: number;
  successes: number;
  success_rate: number;
  mean_confidence: number;
  p50_ms: number;
  p95_ms: number;
}

export function toAggregate(r: Row): PromptAggregate {
  const count = Number(r.count);
  const successes = Number(r.successes);
  return { count, successes, success_rate: count === 0 ? 0 : successes / count, mean_confidence: Number(r.mean_confidence), p50_ms: Number(r.p50_ms), p95_ms: Number(r.p95_ms) };
}

export async function runQuery(db: SqlClient, kind: QueryKind, a: QueryArgs): Promise<TermObject[]> {
  switch (kind) {
    case 'by_id': {
      const out: TermObject[] = [];
      for (const [k, spec] of Object.entries(TABLES) as Array<[EntryKind, (typeof TABLES)[EntryKind]]>) {
        const rows = await db.query(`SELECT * FROM ${spec.table} WHERE id = $1::uuid`, [a.id!]);
        for (const r of rows) out.push(toRecord({ ...r, kind: k }));
      }
      return out;
    }
    case 'similar': {
      const stack = (a.techStack ?? []).map((s) => s.toLowerCase());
      const rows = await db.query(
        `SELECT *, (SELECT count(*) FROM unnest(project_tech_stack) s WHERE s = ANY($1::text[]))::int AS overlap
           FROM context_signatures
          WHERE project_tech_stack && $1::text[] OR project_type = $2
          ORDER BY (project_type = $2) DESC, overlap DESC, created_at DESC LIMIT $3`,
        [stack, a.projectType ?? '', a.limit],
      );
      return rows.map(toRecord);
    }
    case 'by_tech_stack': {
      const rows = await db.query(`SELECT * FROM context_signatures WHERE project_tech_stack @> $1::text[] ORDER BY created_at DESC LIMIT $2`, [
        (a.techStack ?? []).map((s) => s.toLowerCase()),
        a.limit,
      ]);
      return rows.map(toRecord);
    }
    case 'prompt_executions': {
      const rows = await db.query(`SELECT * FROM prompt_executions WHERE prompt_id = $1 ORDER BY "timestamp" DESC, seq DESC LIMIT $2`, [a.promptId!, a.limit]);
      return rows.map(toRecord);
    }
    case 'recent_feedback': {
      const params: SqlParam[] = [new Date(Date.now() - (a.sinceMs ?? 86_400_000)).toISOString(), a.limit];
      let where = `"timestamp" >= $1::timestamptz`;
      if (a.promptId !== undefined) {
        params.push(a.promptId);
        where += ` AND prompt_id = $3`;
      }
      const rows = await db.query(`SELECT * FROM prompt_feedback WHERE ${where} ORDER BY "timestamp" DESC, seq DESC LIMIT $2`, params);
      return rows.map(toRecord);
    }
    case 'evolution_history': {
      const rows = await db.query(
        `SELECT * FROM prompt_evolutions WHERE original_prompt_id = $1 OR evolved_prompt_id = $1 ORDER BY evolution_timestamp, seq LIMIT $2`,
        [a.promptId!, a.limit],
      );
      return rows.map(toRecord);
    }
    case 'high_performance': {
      const rows = await db.query(
        `SELECT prompt_id, count(*)::int AS count, sum(CASE WHEN success THEN 1 ELSE 0 END)::int AS successes,
                coalesce(avg(confidence_score), 0)::float8 AS mean_confidence,
                coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY execution_time_ms), 0)::float8 AS p50_ms,
                coalesce(percentile_cont(0.95) WITHIN GROUP (ORDER BY execution_time_ms), 0)::float8 AS p95_ms
           FROM prompt_executions GROUP BY prompt_id
         HAVING count(*) >= $2 AND sum(CASE WHEN success THEN 1 ELSE 0 END)::float8 / count(*) >= $1
          ORDER BY sum(CASE WHEN success THEN 1 ELSE 0 END)::float8 / count(*) DESC, count(*) DESC, prompt_id LIMIT $3`,
        [a.minSuccessRate ?? 0.8, a.minCount ?? 1, a.limit],
      );
      return rows.map((r) => aggregateRecord(String(r.prompt_id), toAggregate(r)));
    }
  }
}
