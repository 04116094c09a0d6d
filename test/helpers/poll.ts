/**
 * Waiting on a condition in a test: polled, never a fixed sleep (a busy
 * 2-core machine makes any short clock flaky).
 */

/** Whether `cond` holds within `ms`, polled every `everyMs`. */
export async function holdsWithin(cond: () => boolean | Promise<boolean>, ms: number, everyMs = 100): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return true;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  return false;
}

/** Resolves once `cond` holds (polled every `everyMs`); fails after `ms`. */
export async function until(cond: () => boolean | Promise<boolean>, ms = 30_000, everyMs = 5): Promise<void> {
  if (!(await holdsWithin(cond, ms, everyMs))) throw new Error('condition not met in time');
}
