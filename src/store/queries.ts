/**
 * The seven query kinds of the `query` op, as SQL over the tracking tables,
 * and the per-prompt aggregate they share with `prompt_stats`.
 *
 * A reply's rows are bounded twice: by the caller's `limit` (10,000 at most)
 * and by `QUERY_REPLY_BYTES` of their text, counted in SQL as the rows are
 * read (a running sum over the rows the LIMIT keeps), so that 10,000 rows of 64 KiB
 * metadata never reach this process: the rows past the budget stay in
 * PostgreSQL and the caller is told how many fit.
 */
import type { TermObject } from '../codec/terms.js';
import { badRequest } from '../contract/errors.js';
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

/** The most text one `query` reply carries: each row counted as PostgreSQL writes it (`row::text`). */
export const QUERY_REPLY_BYTES = 16 * 1024 * 1024;

/**
 * `SELECT t.* FROM <from> t WHERE <where> ORDER BY <order> LIMIT n`, cut
 * where the rows' text passes `budget` bytes. The LIMIT is taken first (so
 * PostgreSQL keeps its bounded top-n sort); then each of those rows carries
 * its size and the running sum up to it, and only the rows within the
 * budget and the first one past it (which tells the budget was passed) are
 * sent. The caller gets `bad_request` naming how many rows fit, rather than
 * a reply some rows short that looks whole. `order` writes the ORDER BY
 * over a table alias (`t` inside, `s` over the limited rows).
 */
async function rowsWithin(
  db: SqlClient,
  q: { from: string; where: string; order: (alias: 't' | 's') => string; params: SqlParam[]; limit: number; extra?: string },
  budget = QUERY_REPLY_BYTES,
): Promise<Row[]> {
  const n = q.params.length;
  const rows = await db.query(
    `SELECT * FROM (
       SELECT s.*, octet_length(s::text) AS pe_row_bytes,
              sum(octet_length(s::text)) OVER (ORDER BY ${q.order('s')} ROWS UNBOUNDED PRECEDING) AS pe_upto
         FROM (SELECT t.*${q.extra ?? ''} FROM ${q.from} t WHERE ${q.where} ORDER BY ${q.order('t')} LIMIT $${n + 1}) s
     ) u WHERE u.pe_upto - u.pe_row_bytes <= $${n + 2} ORDER BY u.pe_upto`,
    [...q.params, q.limit, budget],
  );
  const last = rows[rows.length - 1];
  if (last !== undefined && Number(last.pe_upto) > budget) {
    const fit = rows.length - 1;
    throw badRequest('limit', `the first ${rows.length} rows of this query hold more than ${budget} bytes, the most one reply carries: ask for at most ${fit}, or narrow the query`);
  }
  for (const r of rows) {
    delete r.pe_row_bytes;
    delete r.pe_upto;
  }
  return rows;
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
      const overlap = `(SELECT count(*) FROM unnest(t.project_tech_stack) s WHERE s = ANY($1::text[]))::int`;
      const rows = await rowsWithin(
        db,
        {
          from: 'context_signatures',
          where: `t.project_tech_stack && $1::text[] OR t.project_type = $2`,
          order: (a) => `(${a}.project_type = $2) DESC, ${a === 't' ? overlap : 's.overlap'} DESC, ${a}.created_at DESC, ${a}.seq DESC`,
          extra: `, ${overlap} AS overlap`,
          params: [stack, a.projectType ?? ''],
          limit: a.limit,
        },
      );
      return rows.map(toRecord);
    }
    case 'by_tech_stack': {
      const rows = await rowsWithin(
        db,
        { from: 'context_signatures', where: `t.project_tech_stack @> $1::text[]`, order: (a) => `${a}.created_at DESC, ${a}.seq DESC`, params: [(a.techStack ?? []).map((s) => s.toLowerCase())], limit: a.limit },
      );
      return rows.map(toRecord);
    }
    case 'prompt_executions': {
      const rows = await rowsWithin(db, { from: 'prompt_executions', where: `t.prompt_id = $1`, order: (a) => `${a}."timestamp" DESC, ${a}.seq DESC`, params: [a.promptId!], limit: a.limit });
      return rows.map(toRecord);
    }
    case 'recent_feedback': {
      const params: SqlParam[] = [new Date(Date.now() - (a.sinceMs ?? 86_400_000)).toISOString()];
      let where = `t."timestamp" >= $1::timestamptz`;
      if (a.promptId !== undefined) {
        params.push(a.promptId);
        where += ` AND t.prompt_id = $2`;
      }
      const rows = await rowsWithin(db, { from: 'prompt_feedback', where, order: (a) => `${a}."timestamp" DESC, ${a}.seq DESC`, params, limit: a.limit });
      return rows.map(toRecord);
    }
    case 'evolution_history': {
      const rows = await rowsWithin(
        db,
        { from: 'prompt_evolutions', where: `t.original_prompt_id = $1 OR t.evolved_prompt_id = $1`, order: (a) => `${a}.evolution_timestamp, ${a}.seq`, params: [a.promptId!], limit: a.limit },
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
