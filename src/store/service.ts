/** Registers the `store` service: PostgreSQL when DATABASE_URL is set, else PGlite under the data dir. */
import { defineService } from '../engine.js';
import { TrackingStore } from './trackingStore.js';

declare module '../engine.js' {
  interface Services {
    store: TrackingStore;
  }
}

defineService('store', {
  create: (engine) => TrackingStore.open({ databaseUrl: engine.config.databaseUrl, dataDir: engine.config.dataDir, log: engine.log.child({ part: 'store' }) }),
  close: (s) => s.close(),
  stats: (s) => s.figures,
});
