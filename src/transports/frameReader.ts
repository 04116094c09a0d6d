/**
 * Reassembles `{:packet, 4}` frames (4-byte big-endian length + payload)
 * from any chunking of a byte stream. A frame declaring more than
 * `maxFrameBytes` is refused before anything is allocated for it: its bytes
 * are skipped as they arrive, keeping only its head (the first
 * `OVERSIZED_HEAD_BYTES`, or the whole frame if shorter), and `onOversized`
 * is called once that head is in — however the stream was chunked, so the
 * request id in it can always be answered — and the stream stays in sync.
 */
export interface FrameReaderHandlers {
  onFrame(frame: Buffer): void;
  /** `head`: the frame's first bytes (see OVERSIZED_HEAD_BYTES), to read a request id from. */
  onOversized(declaredBytes: number, head: Buffer): void;
}

/** Bytes of an oversized frame kept to read its request id from: enough for a compressed frame's zlib header and first block. */
export const OVERSIZED_HEAD_BYTES = 512;

const EMPTY = Buffer.alloc(0);

interface Oversized {
  declared: number;
  head: Buffer;
  got: number;
}

export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Bytes of an oversized frame still to skip. */
  private skipping = 0;

  constructor(
    private readonly maxFrameBytes: number,
    private readonly handlers: FrameReaderHandlers,
  ) {}

  /** The oversized frame being skipped, while its head is still being collected. */
  private oversized: Oversized | undefined;

  push(chunk: Buffer): void {
    if (this.skipping > 0) chunk = this.skip(chunk);
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    this.drain();
  }

  /** Skip what `chunk` holds of the oversized frame (keeping its head); returns the rest. */
  private skip(chunk: Buffer): Buffer {
    const n = Math.min(this.skipping, chunk.length);
    const o = this.oversized;
    if (o !== undefined) {
      const take = Math.min(n, o.head.length - o.got);
      chunk.copy(o.head, o.got, 0, take);
      o.got += take;
    }
    this.skipping -= n;
    if (o !== undefined && o.got === o.head.length) {
      this.oversized = undefined;
      this.handlers.onOversized(o.declared, o.head);
    }
    return chunk.subarray(n);
  }

  /** Bytes held for an incomplete frame (0 at a frame boundary). */
  get pendingBytes(): number {
    return this.buffered + this.skipping;
  }

  private drain(): void {
    while (this.buffered >= 4) {
      const len = this.peekLength();
      if (len > this.maxFrameBytes) {
        this.consume(4);
        this.skipping = len;
        this.oversized = { declared: len, head: Buffer.alloc(Math.min(len, OVERSIZED_HEAD_BYTES)), got: 0 };
        // What is buffered goes through the skipper; whatever follows the frame is buffered again.
        const rest = this.chunks;
        this.chunks = [];
        this.buffered = 0;
        for (const c of rest) {
          const left = this.skipping > 0 ? this.skip(c) : c;
          if (left.length > 0) {
            this.chunks.push(left);
            this.buffered += left.length;
          }
        }
        if (this.skipping > 0) return;
        continue;
      }
      if (this.buffered < 4 + len) return;
      this.consume(4);
      this.handlers.onFrame(this.consume(len));
    }
  }

  private peekLength(): number {
    const first = this.chunks[0]!;
    if (first.length >= 4) return first.readUInt32BE(0);
    const head = Buffer.concat(this.chunks, Math.min(this.buffered, 8));
    return head.readUInt32BE(0);
  }

  /** Take `n` bytes off the front; copies only when a frame spans chunks. */
  private consume(n: number): Buffer {
    if (n === 0) return EMPTY;
    this.buffered -= n;
    const first = this.chunks[0]!;
    if (first.length > n) {
      this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    if (first.length === n) {
      this.chunks.shift();
      return first;
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.chunks[0]!;
      const take = Math.min(c.length, n - off);
      c.copy(out, off, 0, take);
      off += take;
      if (take === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(take);
    }
    return out;
  }
}

/** Prefix a payload with its 4-byte big-endian length. */
export function frame(payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(4 + payload.length);
  out.writeUInt32BE(payload.length, 0);
  payload.copy(out, 4);
  return out;
}
