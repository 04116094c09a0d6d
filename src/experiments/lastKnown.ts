/**
 * What this sidecar last read from the store of each experiment it serves,
 * kept in its data directory, so that a sidecar restarted while the
 * database is away serves what was decided (the variants, their states,
 * the leader, a pin) rather than the base alone. Read only when the store
 * cannot be: the store stays the truth, and the service reads it again
 * every staleness bound until it answers, then serves what it holds.
 *
 * Written whole at most every 5 s while something changed (a copy,
 * fsync'd, renamed over the file: a crash leaves one whole file or the
 * other; a failed write is tried again), and on close. Bounded, in memory
 * as on disk: the `maxExperiments` most recently read (the view's own
 * bound), and LAST_KNOWN_MAX_BYTES of JSON (past either, the least
 * recently read go). A file from another version (of this layout, or of
 * the store's migrations), or one that cannot be read, is ignored
 * (logged): what it would have served, the store serves once it is back.
 *
 * By hand, not a library: one JSON file written atomically is a few lines
 * of `fs`; an embedded database for it would be a second store.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { ExperimentSnapshot } from '../store/experimentRecords.js';
import { MIGRATIONS } from '../store/migrations.js';
import { experimentKey } from './experiment.js';

/** The most the file holds. */
export const LAST_KNOWN_MAX_BYTES = 64 * 2 ** 20;
/** How long a change waits before the file is written (changes meanwhile share the write). */
const WRITE_AFTER_MS = 5_000;
/** The file's layout, and the store's (a snapshot's fields follow its migrations): another is ignored. */
const VERSION = `1/${MIGRATIONS.at(-1)!.version}`;
/** About how much of the file goes to the disk at once. */
const WRITE_PIECE_CHARS = 2 ** 20;

function kept(s: ExperimentSnapshot): Kept {
  const json = JSON.stringify(s);
  return { generation: s.row.generation, revision: s.row.revision, json, bytes: Buffer.byteLength(json) + 1 };
}

/** One experiment as last read: serialized once, when read (a later write of the file only joins them). */
interface Kept {
  generation: number;
  revision: number;
  json: string;
  bytes: number;
}

export class LastKnown {
  /** By key, least recently read first. */
  private readonly byKey = new Map<string, Kept>();
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();
  private dirty = false;
  private closed = false;
  /** Bytes of JSON held (the file's bound holds in memory too). */
  private bytes = 0;

  private constructor(
    private readonly file: string,
    private readonly maxExperiments: number,
    private readonly log: Logger,
    private readonly maxBytes: number,
  ) {}

  /** The file for `schema` in `dir` (created when first written), with what an earlier process left in it. */
  static async open(dir: string, schema: string, maxExperiments: number, log: Logger, maxBytes = LAST_KNOWN_MAX_BYTES): Promise<LastKnown> {
    const known = new LastKnown(path.join(dir, 'loop', `${schema}.json`), maxExperiments, log, maxBytes);
    await known.read();
    return known;
  }

  private async read(): Promise<void> {
    let text: string;
    try {
      text = await fs.promises.readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log.warn({ err: (err as Error).message }, 'closed-loop state kept from before not read');
      return;
    }
    try {
      const doc = JSON.parse(text) as { version?: unknown; experiments?: unknown };
      if (doc.version !== VERSION || !Array.isArray(doc.experiments)) throw new Error(`version ${String(doc.version)}, expected ${VERSION}`);
      for (const s of doc.experiments as ExperimentSnapshot[]) {
        if (typeof s?.row?.name !== 'string' || typeof s.row.model !== 'string' || !Array.isArray(s.variants)) throw new Error('an experiment without its name, model or variants');
        this.hold(experimentKey(s.row.name, s.row.model), kept(s));
      }
    } catch (err) {
      this.byKey.clear();
      this.bytes = 0;
      this.log.warn({ err: (err as Error).message }, 'closed-loop state kept from before ignored');
    }
  }

  /** A snapshot read from (or written to) the store; an older one of the same generation than the one kept changes nothing. */
  remember(s: ExperimentSnapshot): void {
    if (this.closed) return;
    const key = experimentKey(s.row.name, s.row.model);
    const held = this.byKey.get(key);
    if (held !== undefined && (held.generation > s.row.generation || (held.generation === s.row.generation && held.revision > s.row.revision))) return;
    this.hold(key, kept(s));
    this.dirty = true;
    this.schedule();
  }

  /** `k` as the most recently read, the least recently read dropped past the bounds (count, bytes). */
  private hold(key: string, k: Kept): void {
    this.release(key);
    this.byKey.set(key, k);
    this.bytes += k.bytes;
    for (const old of this.byKey.keys()) {
      if (this.byKey.size <= this.maxExperiments && this.bytes <= this.maxBytes) break;
      if (old !== key) this.release(old);
    }
  }

  private release(key: string): void {
    const k = this.byKey.get(key);
    if (k === undefined) return;
    this.byKey.delete(key);
    this.bytes -= k.bytes;
  }

  private schedule(): void {
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, WRITE_AFTER_MS).unref();
  }

  /** What was last read of an experiment, if anything. */
  recall(name: string, model: string): ExperimentSnapshot | undefined {
    const held = this.byKey.get(experimentKey(name, model));
    return held === undefined ? undefined : (JSON.parse(held.json) as ExperimentSnapshot);
  }

  /** Write the file now if something changed (one write at a time). */
  flush(): Promise<void> {
    this.writing = this.writing.then(async () => {
      if (!this.dirty) return;
      this.dirty = false;
      try {
        await this.write();
      } catch (err) {
        // Tried again later (a full disk may have room then), not left older than the view until the next read.
        this.log.warn({ err: (err as Error).message }, 'closed-loop state not kept on disk');
        this.dirty = true;
        if (!this.closed) this.schedule();
      }
    });
    return this.writing;
  }

  private async write(): Promise<void> {
    // The most recently read first, as many as fit; written in pieces (no one string of the whole file).
    const parts: string[] = [];
    let bytes = 0;
    for (const k of [...this.byKey.values()].reverse()) {
      bytes += k.bytes;
      if (bytes > this.maxBytes) break;
      parts.push(k.json);
    }
    parts.reverse();
    await fs.promises.mkdir(path.dirname(this.file), { recursive: true });
    const tmp = `${this.file}.tmp`;
    const fh = await fs.promises.open(tmp, 'w');
    let done = false;
    try {
      await fh.write(`{"version":${JSON.stringify(VERSION)},"experiments":[`);
      for (let i = 0; i < parts.length; ) {
        let piece = '';
        for (; i < parts.length && piece.length < WRITE_PIECE_CHARS; i++) piece += (i > 0 ? ',' : '') + parts[i]!;
        await fh.write(piece);
      }
      await fh.write(']}\n');
      await fh.sync();
      done = true;
    } finally {
      await fh.close();
      // A copy cut short (a full disk) goes: the disk is the journal's too.
      if (!done) await fs.promises.rm(tmp, { force: true });
    }
    await fs.promises.rename(tmp, this.file);
  }

  /** Stop: what changed since the last write is written. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    await this.flush();
  }
}
