/** {packet,4} reassembly from any chunking, and refusal of oversized frames without allocating them (their head kept, whatever the chunking, for the request id). */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FrameReader, OVERSIZED_HEAD_BYTES, frame } from '../src/transports/frameReader.js';

function collect(max: number) {
  const frames: Buffer[] = [];
  const oversized: number[] = [];
  const reader = new FrameReader(max, { onFrame: (f) => frames.push(Buffer.from(f)), onOversized: (n) => oversized.push(n) });
  return { reader, frames, oversized };
}

/** Split `buf` at the given cut points. */
function chunk(buf: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let last = 0;
  for (const p of points) {
    out.push(buf.subarray(last, p));
    last = p;
  }
  out.push(buf.subarray(last));
  return out;
}

describe('FrameReader', () => {
  it('reassembles every frame, in order, from any chunking', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 20 }), fc.array(fc.nat(), { maxLength: 40 }), (payloads, cuts) => {
        const stream = Buffer.concat(payloads.map((p) => frame(Buffer.from(p))));
        const { reader, frames, oversized } = collect(1 << 20);
        for (const c of chunk(stream, cuts)) reader.push(c);
        expect(frames.map((f) => [...f])).toEqual(payloads.map((p) => [...p]));
        expect(oversized).toEqual([]);
        expect(reader.pendingBytes).toBe(0);
      }),
      { numRuns: 500, seed: 42 },
    );
  });

  it('skips an oversized frame as its bytes arrive and stays in sync for the next one', () => {
    fc.assert(
      fc.property(fc.integer({ min: 101, max: 5000 }), fc.array(fc.nat(), { maxLength: 30 }), (bigLen, cuts) => {
        const stream = Buffer.concat([frame(Buffer.alloc(10, 1)), frame(Buffer.alloc(bigLen, 2)), frame(Buffer.alloc(20, 3))]);
        const { reader, frames, oversized } = collect(100);
        for (const c of chunk(stream, cuts)) reader.push(c);
        expect(oversized).toEqual([bigLen]);
        expect(frames.map((f) => [f.length, f[0]])).toEqual([
          [10, 1],
          [20, 3],
        ]);
      }),
      { numRuns: 300, seed: 7 },
    );
  });

  it('refuses a frame declaring 4 GiB once its head is in, without allocating it', () => {
    const { reader, frames, oversized } = collect(64 * 1024 * 1024);
    reader.push(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
    expect(oversized).toEqual([]); // its head (where a request id is) has not arrived yet
    reader.push(Buffer.alloc(OVERSIZED_HEAD_BYTES, 9));
    expect(oversized).toEqual([0xffffffff]);
    expect(frames).toEqual([]);
    expect(reader.pendingBytes).toBe(0xffffffff - 3 - OVERSIZED_HEAD_BYTES); // still skipping, nothing buffered
  });

  it("hands over an oversized frame's head whatever the chunking (the header alone, then a byte at a time)", () => {
    fc.assert(
      fc.property(fc.integer({ min: 101, max: 3000 }), fc.array(fc.nat(), { maxLength: 40 }), (bigLen, cuts) => {
        const body = Buffer.alloc(bigLen, 2);
        body.write('head-of-the-frame', 0, 'latin1');
        const stream = Buffer.concat([frame(body), frame(Buffer.alloc(20, 3))]);
        const heads: Buffer[] = [];
        const frames: Buffer[] = [];
        const reader = new FrameReader(100, { onFrame: (f) => frames.push(Buffer.from(f)), onOversized: (_n, head) => heads.push(Buffer.from(head)) });
        reader.push(stream.subarray(0, 4));
        for (const c of chunk(stream.subarray(4), cuts)) reader.push(c);
        expect(heads).toHaveLength(1);
        expect(heads[0]!.length).toBe(Math.min(bigLen, OVERSIZED_HEAD_BYTES));
        expect(heads[0]!.toString('latin1', 0, 17)).toBe('head-of-the-frame');
        expect(frames.map((f) => f.length)).toEqual([20]);
      }),
      { numRuns: 300, seed: 11 },
    );
  });
});
