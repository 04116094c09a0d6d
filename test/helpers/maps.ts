/** What "a map inherits nothing" means for a decoded map object, asserted in one place. */
import { expect } from 'vitest';

/** Every object on `m`'s prototype chain is empty and frozen (a chain of at most two: a shape's prototype, then MAP_PROTO). */
export function expectInheritsNothing(m: object): void {
  let proto = Object.getPrototypeOf(m) as object | null;
  for (let depth = 0; proto !== null; depth++) {
    expect(depth).toBeLessThan(2);
    expect(Reflect.ownKeys(proto)).toEqual([]);
    expect(Object.isFrozen(proto)).toBe(true);
    proto = Object.getPrototypeOf(proto) as object | null;
  }
  for (const inherited of ['constructor', 'toString', 'hasOwnProperty', 'valueOf'])
    if (!Object.prototype.hasOwnProperty.call(m, inherited)) expect((m as Record<string, unknown>)[inherited]).toBeUndefined();
}
