/** Registers the `store` service: PostgreSQL when DATABASE_URL is set, else PGlite under the data dir. */
import { defineService } from '../engine.js';
import { OpError } from '../ops/types.js';
import { TrackingStore } from './trackingStore.js';

declare module '../engine.js' {
  interface Services {
    store: TrackingStore;
  }
}

defineService('store', {
  create: (engine) =>
    TrackingStore.open({ databaseUrl: engine.config.databaseUrl, dataDir: engine.config.dataDir, log: engine.log.child({ part: 'store' }) }).catch((err: unknown) => {
      // e.g. a PGlite directory held by another sidecar: the caller gets {:error, {:unavailable, why}}
      throw new OpError('unavailable', `tracking store: ${(err as Error).message}`);
    }),
  close: (s) => s.close(),
  stats: (s) => s.figures,
});
