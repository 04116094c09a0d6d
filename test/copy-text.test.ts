/**
 * The group-commit writer's COPY path, without a database: which batches go
 * through COPY, the text it sends, and the fall-back to the INSERT when a
 * batch repeats an id already stored (COPY has no ON CONFLICT). The real
 * PostgreSQL round trip is in store.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { copyText, insertRows } from '../src/store/groupCommitWriter.js';
import type { EntryRow } from '../src/store/entries.js';
import type { SqlClient, SqlParam } from '../src/store/db.js';

const exec = (i: number, note = 'n'): EntryRow => ({ kind: 'execution', id: `id-${i}`, values: [`id-${i}`, 'p', i, true, 0.5, note, null, '2026-01-01T00:00:00.000Z', '{}'] }) as EntryRow;

const COPY_MIN_ROWS = 64;

function fakeDb(copyError?: { code: string }): { db: SqlClient; log: string[] } {
  const log: string[] = [];
  const copy = async (table: string, _columns: readonly string[], text: string): Promise<void> => {
    log.push(`copy ${table} ${text.split('\n').length - 1}`);
    if (copyError) throw Object.assign(new Error('duplicate key'), copyError);
  };
  const query = async (sql: string, _p?: SqlParam[]): Promise<Array<Record<string, unknown>>> => {
    log.push(`query ${sql.slice(0, 11)}`);
    return [];
  };
  const db = {
    backend: 'postgres',
    copy: { minRows: COPY_MIN_ROWS, write: copy },
    async session<T>(transaction: boolean, fn: (q: typeof query, c: typeof copy) => Promise<T>) {
      if (transaction) log.push('transaction');
      return { value: await fn(query, copy), notices: [] };
    },
  } as unknown as SqlClient;
  return { db, log };
}

describe('COPY in group commit', () => {
  it('escapes backslash, tab, newline and carriage return, writes NULL as \\N', () => {
    expect(copyText([exec(1, 'a\tb\nc\\d\re')])).toBe('id-1\tp\t1\ttrue\t0.5\ta\\tb\\nc\\\\d\\re\t\\N\t2026-01-01T00:00:00.000Z\t{}\n');
  });

  it('sends a batch of one kind and at least the backend\'s copy.minRows rows through COPY, smaller ones through INSERT', async () => {
    const big = fakeDb();
    await insertRows(big.db, Array.from({ length: COPY_MIN_ROWS }, (_, i) => exec(i)));
    expect(big.log).toEqual([`copy prompt_executions ${COPY_MIN_ROWS}`]);
    const small = fakeDb();
    await insertRows(small.db, Array.from({ length: COPY_MIN_ROWS - 1 }, (_, i) => exec(i)));
    expect(small.log).toEqual(['query INSERT INTO']);
  });

  it('falls back to the INSERT (which skips duplicates) on unique_violation, and passes other errors on', async () => {
    const dup = fakeDb({ code: '23505' });
    await insertRows(dup.db, Array.from({ length: 100 }, (_, i) => exec(i)));
    expect(dup.log).toEqual(['copy prompt_executions 100', 'query INSERT INTO']);
    const bad = fakeDb({ code: '22P02' });
    await expect(insertRows(bad.db, Array.from({ length: 100 }, (_, i) => exec(i)))).rejects.toThrow('duplicate key');
    expect(bad.log).toEqual(['copy prompt_executions 100']);
  });
});
