/** Frames for fuzzing the live sidecar: the i-th mutation of a seed (bit flips, a random byte, or a truncation), framed. */
import { frame } from '../../src/transports/frameReader.js';

export function mutatedFrame(seeds: readonly Buffer[], i: number, pick: (n: number) => number): Buffer {
  const base = Buffer.from(seeds[pick(seeds.length)]!);
  if (i % 2 === 0)
    for (let k = 0; k <= pick(3); k++) {
      const at = pick(base.length);
      base[at] = base[at]! ^ (1 << pick(8));
    }
  else base.writeUInt8(pick(256), pick(base.length));
  return frame(i % 7 === 0 ? base.subarray(0, pick(base.length)) : base);
}
