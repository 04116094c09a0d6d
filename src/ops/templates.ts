/** Ops of the templates part (filled in by its issue). */
import type { OpSpec } from './types.js';

export const templatesOps: OpSpec<unknown>[] = [];
