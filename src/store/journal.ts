/**
 * The local append-only journal: where accepted entries go while the
 * database is unreachable. Each append is fsync'd before the caller is
 * answered; replay re-inserts in append order (idempotent by entry id), and
 * the file is only truncated when everything in it is in the database. It
 * survives restarts: a new store replays what an old one left.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { StoreWrite } from './groupCommitWriter.js';

export class Journal {
  private fh: fs.promises.FileHandle | undefined;
  private chain: Promise<unknown> = Promise.resolve();
  /** Bytes of the file already replayed into the database. */
  private replayedBytes = 0;
  private size = 0;
  private entries = 0;
  private replayedEntries = 0;
  private readonly file: string;

  constructor(dir: string) {
    fs.mkdirSync(dir, { recursive: true });
    this.file = path.join(dir, 'journal.ndjson');
  }

  /** Open the file and count what an earlier process left in it. */
  async open(): Promise<void> {
    this.fh = await fs.promises.open(this.file, 'a+');
    let text = await fs.promises.readFile(this.file, 'utf8');
    if (text.length > 0 && !text.endsWith('\n')) {
      // A torn last append (the process was killed mid-write) was never acknowledged: drop it.
      text = text.slice(0, text.lastIndexOf('\n') + 1);
      await this.fh.truncate(Buffer.byteLength(text));
    }
    this.size = Buffer.byteLength(text);
    this.entries = text.split('\n').filter((l) => l.length > 0).length;
  }

  /** Entries appended and not yet replayed. */
  get depth(): number {
    return this.entries - this.replayedEntries;
  }

  /** Append rows and fsync; resolves once they are on disk. Serialised with replay steps. */
  append(rows: StoreWrite[]): Promise<void> {
    return this.serial(async () => {
      // An execution's parsed `meta` is left out: its values hold the same metadata as JSON text.
      const text = rows.map((r) => JSON.stringify(r, (k, v: unknown) => (k === 'meta' ? undefined : v))).join('\n') + '\n';
      await this.fh!.write(text);
      await this.fh!.datasync();
      this.size += Buffer.byteLength(text);
      this.entries += rows.length;
    });
  }

  /**
   * Replay everything into the database through `insert` (batches, in order).
   * Appends may continue meanwhile; they are replayed too. Throws if `insert`
   * throws (the database went away again): what was inserted stays counted.
   */
  async replay(insert: (rows: StoreWrite[]) => Promise<void>, batch = 500): Promise<number> {
    let total = 0;
    for (;;) {
      const pending = await this.serial(async () => {
        if (this.replayedBytes === this.size) {
          // Everything is in the database: start the file afresh.
          await this.fh!.truncate(0);
          this.size = this.replayedBytes = this.entries = this.replayedEntries = 0;
          return undefined;
        }
        const buf = Buffer.alloc(this.size - this.replayedBytes);
        await this.fh!.read(buf, 0, buf.length, this.replayedBytes);
        return buf;
      });
      if (pending === undefined) return total;
      // Only whole lines; a line still being appended waits for the next pass.
      const text = pending.toString('utf8');
      const lines = text.slice(0, text.lastIndexOf('\n') + 1).split('\n').slice(0, -1);
      for (let i = 0; i < lines.length; i += batch) {
        const chunk = lines.slice(i, i + batch);
        // A torn last line (killed mid-append) was never acknowledged: skip it.
        await insert(chunk.flatMap((l) => parseLine(l)));
        // Advance per chunk, so a failure part-way does not replay (and count) a chunk twice.
        this.replayedBytes += chunk.reduce((n, l) => n + Buffer.byteLength(l) + 1, 0);
        this.replayedEntries += chunk.filter((l) => l.length > 0).length;
        total += chunk.length;
      }
    }
  }

  async close(): Promise<void> {
    await this.serial(async () => {
      await this.fh?.close();
      this.fh = undefined;
    });
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => undefined);
    return next;
  }
}

function parseLine(line: string): StoreWrite[] {
  try {
    return [JSON.parse(line) as StoreWrite];
  } catch {
    return [];
  }
}
