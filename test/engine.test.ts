/**
 * The engine's service lifecycle: a service that starts what it uses lazily
 * (after itself, as the closed loop starts the scorer at its first
 * proposal) is still closed before what it uses.
 */
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { Engine } from '../src/engine.js';
import { createLogger } from '../src/log.js';

interface Svc {
  closed: boolean;
}
type Services = { scorer: Svc; loop: Svc };

describe('engine', () => {
  it('closes users before what they use, whatever order they started in', async () => {
    const order: string[] = [];
    const svc = (name: string, uses?: () => Svc) => ({
      create: (): Svc => ({ closed: false }),
      close: (s: Svc): void => {
        // a user closing after what it uses would find it closed
        if (uses !== undefined && uses().closed) order.push(`${name} found its dependency closed`);
        s.closed = true;
        order.push(name);
      },
    });
    let scorer: Svc | undefined;
    const engine = new Engine<Services>(loadConfig({}), createLogger('silent'), {
      scorer: svc('scorer'),
      loop: svc('loop', () => scorer!),
    });
    await engine.service('loop'); // starts first
    scorer = await engine.service('scorer'); // used lazily, started after it
    expect(engine.startedServices).toEqual(['loop', 'scorer']);
    await engine.close();
    expect(order).toEqual(['loop', 'scorer']);
  });
});
