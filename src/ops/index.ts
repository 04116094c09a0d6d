/**
 * The ops part: builds the one op table every transport serves. Each
 * part's ops live in `ops/<part>.ts` and talk to that part's service.
 */
import { cacheOps } from './cache.js';
import { coreOps } from './core.js';
import { experimentOps } from './experiments.js';
import { learningOps } from './learning.js';
import { modelOps } from './models.js';
import { optimizerOps } from './optimizer.js';
import { OpTable } from './registry.js';
import { templatesOps } from './templates.js';
import { trackingOps } from './tracking.js';

export { OpTable } from './registry.js';
export type { OpResult } from './registry.js';

export function createOpTable(): OpTable {
  const table: OpTable = new OpTable();
  for (const op of [...coreOps(() => table), ...cacheOps, ...templatesOps, ...trackingOps, ...learningOps, ...modelOps, ...optimizerOps, ...experimentOps]) table.add(op);
  return table;
}
