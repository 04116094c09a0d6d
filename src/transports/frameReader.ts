/**
 * Reassembles `{:packet, 4}` frames (4-byte big-endian length + payload)
 * from any chunking of a byte stream. A frame declaring more than
 * `maxFrameBytes` is refused before anything is allocated for it: its bytes
 * are skipped as they arrive and `onOversized` is called once, so the
 * stream stays in sync and the sidecar keeps serving.
 */
export interface FrameReaderHandlers {
  onFrame(frame: Buffer): void;
  /** `head`: the frame's first bytes as far as they have arrived (at most 64), to read a request id from. */
  onOversized(declaredBytes: number, head: Buffer): void;
}

const EMPTY = Buffer.alloc(0);

export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Bytes of an oversized frame still to skip. */
  private skipping = 0;

  constructor(
    private readonly maxFrameBytes: number,
    private readonly handlers: FrameReaderHandlers,
  ) {}

  push(chunk: Buffer): void {
    if (this.skipping > 0) {
      const n = Math.min(this.skipping, chunk.length);
      this.skipping -= n;
      chunk = chunk.subarray(n);
      if (chunk.length === 0) return;
    }
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    this.drain();
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
        const head = Buffer.from(Buffer.concat(this.chunks, Math.min(this.buffered, 64)));
        const skipNow = Math.min(len, this.buffered);
        this.consume(skipNow);
        this.skipping = len - skipNow;
        this.handlers.onOversized(len, head);
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
