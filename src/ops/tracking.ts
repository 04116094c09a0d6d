/** Ops of the tracking part (filled in by its issue). */
import type { OpSpec } from './types.js';

export const trackingOps: OpSpec<unknown>[] = [];
