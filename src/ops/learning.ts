/** Ops of the learning part (filled in by its issue). */
import type { OpSpec } from './types.js';

export const learningOps: OpSpec<unknown>[] = [];
