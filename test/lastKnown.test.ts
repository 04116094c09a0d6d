/**
 * What a sidecar last read of each experiment, kept in its data directory
 * (src/experiments/lastKnown.ts): it survives a restart, holds the most
 * recently read within its bounds (experiments, bytes), never lets an
 * older read of a generation replace a newer one, and ignores a file it
 * cannot read rather than failing the start.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { LastKnown } from '../src/experiments/lastKnown.js';
import { DEFAULT_OBJECTIVE, NO_TOTALS } from '../src/experiments/objective.js';
import type { ExperimentSnapshot } from '../src/store/experimentRecords.js';
import { createLogger } from '../src/log.js';

const log = createLogger('silent');
const dir = (): string => fs.mkdtempSync(path.join(os.tmpdir(), 'pe-last-known-'));

function snap(name: string, revision = 1, text = 'Answer {q}.', generation = 1): ExperimentSnapshot {
  return {
    row: { name, model: 'm', generation, base_prompt_id: 'base', status: 'running', pinned_prompt_id: null, proposals_made: 0, leader_prompt_id: 'base', objective: DEFAULT_OBJECTIVE, outcomes_at_last_batch: 0, revision, updated_at: '' },
    variants: [{ prompt_id: 'base', text, origin: 'base', prior_alpha: 1, prior_beta: 1, predicted: null, rank: null, state: 'active', ...NO_TOTALS }],
  };
}

describe('what was last read of each experiment, on disk', () => {
  it('comes back after a restart, the most recently read within the number kept', async () => {
    const d = dir();
    const a = await LastKnown.open(d, 'pe', 3, log);
    for (const n of ['e1', 'e2', 'e3', 'e4']) a.remember(snap(n));
    a.remember(snap('e2', 2)); // read again: now the most recent
    a.remember(snap('e5'));
    await a.close();
    const b = await LastKnown.open(d, 'pe', 3, log);
    expect(['e1', 'e2', 'e3', 'e4', 'e5'].map((n) => b.recall(n, 'm')?.row.revision ?? null)).toEqual([null, 2, null, 1, 1]);
    // Another schema's file is another store's.
    expect((await LastKnown.open(d, 'other', 3, log)).recall('e2', 'm')).toBeUndefined();
  });

  it('keeps a newer read of a generation over an older one answered later, and a new generation over both', async () => {
    const k = await LastKnown.open(dir(), 'pe', 10, log);
    k.remember(snap('e', 5));
    k.remember(snap('e', 4));
    expect(k.recall('e', 'm')!.row.revision).toBe(5);
    k.remember(snap('e', 1, 'Answer {q} now.', 2));
    expect(k.recall('e', 'm')!.row.generation).toBe(2);
    k.remember(snap('e', 9)); // the older generation, read late
    expect(k.recall('e', 'm')!.row.generation).toBe(2);
    await k.close();
  });

  it('writes again after a write failed, and nothing after it was closed', async () => {
    const d = dir();
    const k = await LastKnown.open(d, 'pe', 10, log);
    // Where its directory goes, a file: the write fails (as on a full or read-only disk) and the sidecar goes on.
    fs.writeFileSync(path.join(d, 'loop'), '');
    k.remember(snap('e1'));
    await k.flush();
    fs.rmSync(path.join(d, 'loop'));
    await k.flush();
    expect((await LastKnown.open(d, 'pe', 10, log)).recall('e1', 'm')).toBeDefined();
    await k.close();
    k.remember(snap('late'));
    await k.flush();
    expect((await LastKnown.open(d, 'pe', 10, log)).recall('late', 'm')).toBeUndefined();
  });

  it('writes at most its bytes on disk, the most recently read first', async () => {
    const d = dir();
    // Room for two of them (each about the same size), not three.
    const one = Buffer.byteLength(JSON.stringify(snap('e0', 1, 'x'.repeat(1_000)))) + 1;
    const k = await LastKnown.open(d, 'pe', 100, log, 2 * one + 10);
    for (let i = 0; i < 5; i++) k.remember(snap(`e${i}`, 1, 'x'.repeat(1_000)));
    await k.close();
    expect(fs.statSync(path.join(d, 'loop', 'pe.json')).size).toBeLessThanOrEqual(2 * one + 10 + 100);
    const again = await LastKnown.open(d, 'pe', 100, log);
    expect([0, 1, 2, 3, 4].map((i) => again.recall(`e${i}`, 'm') !== undefined)).toEqual([false, false, false, true, true]);
  });

  it('ignores a file it cannot read (cut short, another version) and starts empty', async () => {
    const d = dir();
    const first = await LastKnown.open(d, 'pe', 10, log);
    first.remember(snap('e'));
    await first.close();
    const file = path.join(d, 'loop', 'pe.json');
    const whole = fs.readFileSync(file, 'utf8');
    const version = (JSON.parse(whole) as { version: string }).version;
    for (const text of [whole.slice(0, whole.length >> 1), whole.replace(JSON.stringify(version), '"0/1"'), `{"version":${JSON.stringify(version)},"experiments":[{"variants":[]}]}`]) {
      fs.writeFileSync(file, text);
      const k = await LastKnown.open(d, 'pe', 10, log);
      expect(k.recall('e', 'm')).toBeUndefined();
      k.remember(snap('e'));
      await k.close();
      expect((await LastKnown.open(d, 'pe', 10, log)).recall('e', 'm')).toBeDefined();
    }
  });
});
