/**
 * The local append-only journal: where accepted entries go while the
 * database is unreachable. Each append is fsync'd before the caller is
 * answered; replay re-inserts in append order (idempotent by entry id), and
 * the file is only truncated when everything in it is in the database. It
 * survives restarts: a new store replays what an old one left.
 *
 * Bounded: at most JOURNAL_MAX_BYTES on disk (past it, writes are refused
 * with `unavailable` until the database is back and the journal replayed),
 * and read in pieces of READ_BYTES (opening and replaying a large journal
 * never holds it in memory as one string). What was replayed does not count
 * against the limit: a write that would pass it while part of the file is
 * replayed (the database came back and went away again mid-replay) first
 * compacts the file to what is left to replay (a copy, fsync'd, renamed over
 * the journal, so a crash leaves one whole journal or the other).
 */
import fs from 'node:fs';
import path from 'node:path';
import { OpError } from '../contract/errors.js';
import type { StoreWrite } from './groupCommitWriter.js';

/** The most the journal holds on disk. */
export const JOURNAL_MAX_BYTES = 1024 * 2 ** 20;
/** How much of the file is read at once (a longer line is read whole). */
const READ_BYTES = 8 * 2 ** 20;
const NEWLINE = 0x0a;

export class Journal {
  private fh: fs.promises.FileHandle | undefined;
  private chain: Promise<unknown> = Promise.resolve();
  /** Bytes of the file already replayed into the database. */
  private replayedBytes = 0;
  private size = 0;
  private entries = 0;
  private replayedEntries = 0;
  private readonly file: string;

  constructor(
    dir: string,
    private readonly maxBytes = JOURNAL_MAX_BYTES,
  ) {
    fs.mkdirSync(dir, { recursive: true });
    this.file = path.join(dir, 'journal.ndjson');
  }

  private get compactFile(): string {
    return `${this.file}.compact`;
  }

  /** Open the file and count what an earlier process left in it (read in pieces). */
  async open(): Promise<void> {
    // A compaction cut off before its rename: the journal itself is whole.
    await fs.promises.rm(this.compactFile, { force: true });
    this.fh = await fs.promises.open(this.file, 'a+');
    const size = (await this.fh.stat()).size;
    let entries = 0;
    let lineStart = 0; // where the current line began
    let lastEnd = 0; // just past the last newline
    const buf = Buffer.alloc(Math.min(READ_BYTES, Math.max(1, size)));
    for (let at = 0; at < size; ) {
      const { bytesRead } = await this.fh.read(buf, 0, Math.min(buf.length, size - at), at);
      if (bytesRead === 0) break;
      for (let i = buf.indexOf(NEWLINE, 0); i !== -1 && i < bytesRead; i = buf.indexOf(NEWLINE, i + 1)) {
        if (at + i > lineStart) entries++; // an empty line is no entry
        lineStart = lastEnd = at + i + 1;
      }
      at += bytesRead;
    }
    // A torn last append (the process was killed mid-write) was never acknowledged: drop it.
    if (lastEnd < size) await this.fh.truncate(lastEnd);
    this.size = lastEnd;
    this.entries = entries;
  }

  /** Entries appended and not yet replayed. */
  get depth(): number {
    return this.entries - this.replayedEntries;
  }

  /** Append rows and fsync; resolves once they are on disk. Serialised with replay steps. */
  append(rows: StoreWrite[]): Promise<void> {
    return this.serial(async () => {
      // An execution's parsed `meta` is left out: its values hold the same metadata as JSON text.
      const text = Buffer.from(rows.map((r) => JSON.stringify(r, (k, v: unknown) => (k === 'meta' ? undefined : v))).join('\n') + '\n');
      if (this.size + text.length > this.maxBytes && this.replayedBytes > 0) await this.compact();
      if (this.size + text.length > this.maxBytes)
        throw new OpError('unavailable', `the database is unreachable and the local journal holds ${this.size} bytes, its limit being ${this.maxBytes}: not written; retry once the database is back`);
      try {
        // Whole, or not at all: a short write (a full disk) is finished or fails, and a failed append is cut
        // off again, so the next one does not follow a torn line the sizes here do not count.
        for (let written = 0; written < text.length; ) {
          const { bytesWritten } = await this.fh!.write(text, written, text.length - written);
          if (bytesWritten === 0) throw new Error('the journal could not be written (no progress)');
          written += bytesWritten;
        }
        await this.fh!.datasync();
      } catch (err) {
        await this.fh!.truncate(this.size).catch(() => undefined);
        throw err;
      }
      this.size += text.length;
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
        // The next piece of whole lines (appends end in a newline, so the file does); a line longer than a piece is read whole.
        for (let want = Math.min(READ_BYTES, this.size - this.replayedBytes); ; want = Math.min(want * 2, this.size - this.replayedBytes)) {
          const buf = Buffer.alloc(want);
          await this.fh!.read(buf, 0, want, this.replayedBytes);
          const end = buf.lastIndexOf(NEWLINE);
          if (end !== -1) return buf.subarray(0, end + 1);
          if (want === this.size - this.replayedBytes) return buf;
        }
      });
      if (pending === undefined) return total;
      const text = pending.toString('utf8');
      const lines = text.slice(0, text.lastIndexOf('\n') + 1).split('\n').slice(0, -1);
      if (lines.length === 0) {
        // Bytes without a newline after them were never a whole append: skipped, or the loop would not end.
        this.replayedBytes += pending.length;
        continue;
      }
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

  /**
   * Rewrite the file as what is left to replay. Runs inside `serial`: a replay
   * step that has read a piece and is inserting it meanwhile finds that piece
   * at the start of the new file, and its offsets (replayedBytes, counted from
   * the piece on) stay right.
   */
  private async compact(): Promise<void> {
    // The new file's handle is the journal's once the rename is done: nothing is opened after the rename
    // (a failure there would leave appends going to the old, unlinked file). O_APPEND, as the journal's
    // own handle: every append lands at the end, also after a truncate.
    await fs.promises.rm(this.compactFile, { force: true });
    const out = await fs.promises.open(this.compactFile, 'a+');
    try {
      const buf = Buffer.alloc(Math.min(READ_BYTES, Math.max(1, this.size - this.replayedBytes)));
      for (let at = this.replayedBytes; at < this.size; ) {
        const { bytesRead } = await this.fh!.read(buf, 0, Math.min(buf.length, this.size - at), at);
        if (bytesRead === 0) throw new Error('the journal could not be compacted: it ended early');
        for (let written = 0; written < bytesRead; ) {
          const { bytesWritten } = await out.write(buf, written, bytesRead - written);
          if (bytesWritten === 0) throw new Error('the journal could not be compacted (no progress)');
          written += bytesWritten;
        }
        at += bytesRead;
      }
      await out.datasync();
      await fs.promises.rename(this.compactFile, this.file);
    } catch (err) {
      await out.close().catch(() => undefined);
      await fs.promises.rm(this.compactFile, { force: true });
      // The journal as it was: the write that wanted the room is refused as one past the limit would be.
      throw new OpError('unavailable', `the database is unreachable and the local journal could not make room (${(err as Error).message}): not written; retry once the database is back`);
    }
    const old = this.fh!;
    this.fh = out;
    this.size -= this.replayedBytes;
    this.entries -= this.replayedEntries;
    this.replayedBytes = this.replayedEntries = 0;
    await old.close().catch(() => undefined);
    // The rename itself made durable; should that fail, the new file still serves (and a crash before it comes back either file whole).
    const dir = await fs.promises.open(path.dirname(this.file), 'r').catch(() => undefined);
    await dir?.sync().catch(() => undefined);
    await dir?.close().catch(() => undefined);
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
