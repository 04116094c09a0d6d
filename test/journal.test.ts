/**
 * The local journal (what tracking writes go to while the database is
 * away): bounded on disk (a write past the limit is refused with
 * `unavailable`, the others kept), and opened and replayed in pieces, so a
 * journal larger than one read (or than a string can hold) comes back whole,
 * in order, a torn last append dropped.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { OpError } from '../src/contract/errors.js';
import type { StoreWrite } from '../src/store/groupCommitWriter.js';
import { Journal } from '../src/store/journal.js';

const row = (i: number, pad = 1000): StoreWrite => ({ i, text: 'x'.repeat(pad) }) as unknown as StoreWrite;
const tmp = (): string => fs.mkdtempSync(path.join(os.tmpdir(), 'pe-journal-'));

async function replayAll(j: Journal): Promise<number[]> {
  const seen: number[] = [];
  await j.replay(async (rows) => void seen.push(...rows.map((r) => (r as unknown as { i: number }).i)), 500);
  return seen;
}

/** Append rows 0, 1, ... until the journal refuses one; how many it took. */
async function fillToLimit(j: Journal): Promise<number> {
  for (let kept = 0; ; kept++) {
    try {
      await j.append([row(kept)]);
    } catch {
      return kept;
    }
  }
}

describe('the journal', () => {
  it('replays a journal larger than one read (20 MB, and one line of 9 MB) whole and in order, after a restart that drops a torn append', async () => {
    const dir = tmp();
    const a = new Journal(dir);
    await a.open();
    for (let k = 0; k < 20; k++) await a.append(Array.from({ length: 1000 }, (_, i) => row(k * 1000 + i)));
    await a.append([row(20_000, 9 * 2 ** 20)]);
    await a.close();
    fs.appendFileSync(path.join(dir, 'journal.ndjson'), '{"i": 99999, "torn'); // killed mid-append
    const b = new Journal(dir);
    await b.open();
    expect(b.depth).toBe(20_001);
    const seen = await replayAll(b);
    expect(seen).toEqual(Array.from({ length: 20_001 }, (_, i) => i));
    expect(b.depth).toBe(0);
    expect(await replayAll(b)).toEqual([]); // and the file starts afresh
    expect(fs.statSync(path.join(dir, 'journal.ndjson')).size).toBe(0);
    await b.close();
  });

  it('refuses a write past its limit with unavailable, keeps what it holds, and takes writes again once replayed', async () => {
    const j = new Journal(tmp(), 50_000);
    await j.open();
    let refused: unknown;
    let kept = 0;
    for (let i = 0; i < 100 && refused === undefined; i++) {
      try {
        await j.append([row(i)]);
        kept++;
      } catch (err) {
        refused = err;
      }
    }
    expect(refused).toBeInstanceOf(OpError);
    expect((refused as OpError).reason).toBe('unavailable');
    expect((refused as OpError).message).toMatch(/journal holds \d+ bytes, its limit being 50000/);
    expect(kept).toBeGreaterThan(40);
    expect(await replayAll(j)).toEqual(Array.from({ length: kept }, (_, i) => i));
    await j.append([row(1)]);
    expect(j.depth).toBe(1);
    await j.close();
  });

  it('counts only what is left to replay against its limit: the database back and gone again mid-replay, the file is compacted to the rest, in order', async () => {
    const dir = tmp();
    const j = new Journal(dir, 50_000);
    await j.open();
    const kept = await fillToLimit(j);
    // The database comes back for 20 rows, then goes away again.
    const seen: number[] = [];
    await expect(
      j.replay(async (rows) => {
        if (seen.length >= 20) throw new Error('connection terminated');
        seen.push(...rows.map((r) => (r as unknown as { i: number }).i));
      }, 10),
    ).rejects.toThrow('connection terminated');
    expect(j.depth).toBe(kept - 20);
    // Room for as many as were replayed: the file holds what is left, and never more than the limit.
    for (let i = 0; i < 20; i++) await j.append([row(1000 + i)]);
    expect(fs.statSync(path.join(dir, 'journal.ndjson')).size).toBeLessThanOrEqual(50_000);
    await expect(j.append([row(2000, 5000)])).rejects.toMatchObject({ reason: 'unavailable' });
    expect(j.depth).toBe(kept);
    await j.close();
    // A restart finds the compacted journal whole: what was left, then what came after, in order.
    const again = new Journal(dir, 50_000);
    await again.open();
    expect(again.depth).toBe(kept);
    expect(await replayAll(again)).toEqual([...Array.from({ length: kept - 20 }, (_, i) => 20 + i), ...Array.from({ length: 20 }, (_, i) => 1000 + i)]);
    await again.close();
  });

  it('compacts under a replay that is inserting a piece: that piece and the rest replay once each, in order', async () => {
    const j = new Journal(tmp(), 50_000);
    await j.open();
    const kept = await fillToLimit(j);
    const seen: number[] = [];
    let chunks = 0;
    await j.replay(async (rows) => {
      // While the third piece is being inserted, a write comes that only fits once the two before are compacted away.
      if (++chunks === 3) await j.append([row(5000)]);
      seen.push(...rows.map((r) => (r as unknown as { i: number }).i));
    }, 10);
    expect(seen).toEqual([...Array.from({ length: kept }, (_, i) => i), 5000]);
    expect(j.depth).toBe(0);
    await j.close();
  });

  it('cuts a failed append off again (a disk error at its fsync): the next append and the replay keep only what was acknowledged', async () => {
    const dir = tmp();
    const j = new Journal(dir);
    await j.open();
    await j.append([row(1)]);
    // The disk refuses once, after the bytes went out (ENOSPC, EIO at fsync): that append fails, unacknowledged.
    const fh = (j as unknown as { fh: fs.promises.FileHandle }).fh;
    const datasync = fh.datasync.bind(fh);
    fh.datasync = () => {
      fh.datasync = datasync;
      return Promise.reject(Object.assign(new Error('no space left on device'), { code: 'ENOSPC' }));
    };
    await expect(j.append([row(2), row(3)])).rejects.toMatchObject({ code: 'ENOSPC' });
    await j.append([row(4)]);
    expect(j.depth).toBe(2);
    expect(await replayAll(j)).toEqual([1, 4]);
    await j.close();
  });
});
