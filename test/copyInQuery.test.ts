/**
 * COPY's statement and its rows sent in one write (src/store/copyInQuery.ts),
 * against a real PostgreSQL, on a pool of one connection so every step runs
 * on the connection the one before it left: a COPY the server refuses before
 * it starts or in the middle of its rows leaves that connection answering the
 * next statement (the rows sent after the refusal are dropped by the server,
 * none is taken for a statement of its own), and rows of every size arrive
 * whole.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openPostgres, type SqlClient } from '../src/store/db.js';
import { freshDatabase } from './helpers/pg.js';

describe('COPY in one write (PostgreSQL)', () => {
  let db: SqlClient;
  const copy = (columns: readonly string[], text: string, table = 'copied'): Promise<unknown> =>
    db.session(false, (_q, c) => c(table, columns, text)).then((r) => r.value);
  const count = async (): Promise<number> => Number((await db.query<{ n: string }>('SELECT count(*) AS n FROM copied'))[0]!.n);
  /** The server process behind the pool's one connection: the same before and after means the connection served on (a broken one is replaced). */
  const backend = async (): Promise<number> => (await db.query<{ pid: number }>('SELECT pg_backend_pid() AS pid'))[0]!.pid;

  beforeAll(async () => {
    db = await openPostgres(await freshDatabase('pe_copy_in'), { schema: 'copy_in', max: 1 });
    await db.query('CREATE SCHEMA IF NOT EXISTS copy_in');
    await db.query('CREATE TABLE copied (n integer NOT NULL, t text)');
  });
  afterAll(async () => {
    await db?.close();
  });

  it('stores the rows, and answers the next statement on the same connection', async () => {
    const pid = await backend();
    await copy(['n', 't'], '1\tone\n2\t\\N\n3\ttab\\there\n');
    expect(await backend()).toBe(pid);
    expect(await db.query('SELECT n, t FROM copied ORDER BY n')).toEqual([
      { n: 1, t: 'one' },
      { n: 2, t: null },
      { n: 3, t: 'tab\there' },
    ]);
  });

  it('fails a COPY refused in the middle of its rows with the server\'s error, stores none of them, and the connection serves on', async () => {
    const before = await count();
    const pid = await backend();
    // The third row cannot be an integer: the server refuses it after taking two.
    await expect(copy(['n', 't'], '10\ta\n11\tb\nnot a number\tc\n12\td\n')).rejects.toMatchObject({ code: '22P02' });
    expect(await backend()).toBe(pid);
    expect(await count()).toBe(before);
    await copy(['n', 't'], '13\te\n');
    expect(await count()).toBe(before + 1);
  });

  it('fails a COPY refused before it starts (no such column, no such table), and the connection serves on: the rows sent with it are dropped by the server', async () => {
    const before = await count();
    const pid = await backend();
    await expect(copy(['n', 'missing'], '1\t2\n')).rejects.toMatchObject({ code: '42703' });
    await expect(copy(['n'], '1\n', 'no_such_table')).rejects.toMatchObject({ code: '42P01' });
    expect(await backend()).toBe(pid);
    expect(await count()).toBe(before);
  });

  it('sends rows far larger than a socket takes at once, whole and in order', async () => {
    const before = await count();
    const rows = 40_000;
    const pad = 'x'.repeat(200);
    let text = '';
    for (let i = 0; i < rows; i++) text += `${100_000 + i}\t${pad}${i}\n`;
    expect(text.length).toBeGreaterThan(8 * 1024 * 1024);
    await copy(['n', 't'], text);
    expect(await count()).toBe(before + rows);
    // Every row whole, each with its own text: the stored rows, in n's order, spell the text sent.
    const [stored] = await db.query<{ md5: string }>("SELECT md5(string_agg(n::text || E'\\t' || t || E'\\n', '' ORDER BY n)) AS md5 FROM copied WHERE n >= 100000");
    expect(stored!.md5).toBe(createHash('md5').update(text).digest('hex'));
  });
});
