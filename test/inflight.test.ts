/**
 * The in-flight registry's limit when a caller's deadline passes (NATS):
 * the work is aborted and out of flight at once, but work that does not
 * stop at the abort (an op that never reads its signal) keeps its slot
 * until it settles, at most the hold; so a caller asking for 1 ms
 * deadlines cannot run more work at once than the limit.
 */
import { describe, expect, it } from 'vitest';
import { InFlight } from '../src/transports/inFlight.js';

describe('InFlight.expire', () => {
  it('work that stops at the abort frees its slot at once; work that does not holds it until it settles, at most the hold', async () => {
    const inFlight = new InFlight<number>(2, 'TEST_LIMIT');
    // stops at the abort
    const polite = inFlight.start(1, (c) => new Promise<void>((resolve) => void c.signal.addEventListener('abort', () => resolve())));
    // ignores it
    let finish!: () => void;
    const deaf = inFlight.start(2, () => new Promise<void>((resolve) => (finish = resolve)));
    expect(inFlight.full).toBe(true);
    expect(inFlight.expire(1, 60_000)).toBe(true);
    await polite;
    await Promise.resolve();
    expect(inFlight.full).toBe(false);
    expect(inFlight.expire(2, 60_000)).toBe(true);
    expect(inFlight.size).toBe(0);
    expect(inFlight.lingeringSize).toBe(1);
    // one slot left: the deaf work's is still taken
    void inFlight.start(3, () => new Promise<void>(() => undefined));
    expect(inFlight.full).toBe(true);
    finish();
    await deaf;
    await Promise.resolve();
    expect(inFlight.lingeringSize).toBe(0);
    expect(inFlight.full).toBe(false);
  });

  it('work that never ends gives its slot back when the hold ends', async () => {
    const inFlight = new InFlight<number>(1, 'TEST_LIMIT');
    void inFlight.start(1, () => new Promise<void>(() => undefined));
    inFlight.expire(1, 50);
    expect(inFlight.full).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    expect(inFlight.full).toBe(false);
    // without a hold (the Port's cancel semantics are separate): out of flight at once
    void inFlight.start(2, () => new Promise<void>(() => undefined));
    inFlight.expire(2);
    expect(inFlight.full).toBe(false);
  });
});
