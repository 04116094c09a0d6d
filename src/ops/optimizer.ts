/** Ops of the optimizer part (filled in by its issue). */
import type { OpSpec } from './types.js';

export const optimizerOps: OpSpec<unknown>[] = [];
