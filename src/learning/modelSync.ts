/**
 * One model for every instance: which model to serve (the registry's last
 * promoted one, from its bytes in the table, else the shipped default), and
 * following promotions made by any instance sharing the database
 * (PostgreSQL LISTEN/NOTIFY): load the new model's bytes, check that this
 * build computes the same features, hot-swap it into the scorer. A model
 * whose feature spec this build does not compute is refused with a clear
 * log line and never served.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { TrackingStore } from '../store/trackingStore.js';
import { FEATURE_SPEC, specHash } from './features.js';
import { readModel, type ModelMeta } from './modelFile.js';
import type { Scorer } from './scorer.js';

export interface ServingModel {
  onnx: Uint8Array;
  meta: ModelMeta;
  source: 'registry' | 'shipped';
}

/** Why a stored model cannot be served by this build, or undefined when it can. */
export function refusal(meta: Record<string, unknown>): string | undefined {
  const hash = meta.feature_spec_hash;
  if (hash !== specHash(FEATURE_SPEC))
    return `model ${String(meta.version)} was trained with feature spec ${String(hash)} (version ${String((meta.feature_spec as { version?: unknown } | undefined)?.version ?? '?')}); this build computes ${specHash(FEATURE_SPEC)} (version ${FEATURE_SPEC.version}): not served`;
  return undefined;
}

export function shippedModel(modelsDir: string): ServingModel {
  const { onnx, meta } = readModel(path.join(modelsDir, 'default.onnx'));
  return { onnx, meta, source: 'shipped' };
}

/** The registry's model `version`, if it exists and this build can serve it. */
export async function registryModel(store: TrackingStore, version: string, log: Logger): Promise<ServingModel | undefined> {
  const stored = await store.models.load(version);
  if (stored !== undefined) {
    const why = refusal(stored.meta);
    if (why !== undefined) {
      log.error({ version }, why);
      return undefined;
    }
    return { onnx: stored.onnx, meta: stored.meta as unknown as ModelMeta, source: 'registry' };
  }
  // Rows written before the bytes moved into the table point at a local file.
  const row = (await store.models.list()).find((m) => m.version === version);
  if (row?.path && fs.existsSync(row.path)) {
    const { onnx, meta } = readModel(row.path);
    const why = refusal(meta as unknown as Record<string, unknown>);
    if (why === undefined) return { onnx, meta, source: 'registry' };
    log.error({ version }, why);
  }
  return undefined;
}

/** The model to serve at start: the most recently promoted one this build can serve, else the shipped default. */
export async function servingModel(store: TrackingStore | undefined, modelsDir: string, log: Logger): Promise<ServingModel> {
  if (store !== undefined) {
    try {
      for (const version of await store.models.promotedVersions()) {
        const m = await registryModel(store, version, log);
        if (m !== undefined) return m;
      }
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'no promoted model from the registry: serving the shipped default');
    }
  }
  return shippedModel(modelsDir);
}

/**
 * Follow promotions announced by other instances: swap each new model in
 * (within a second of its NOTIFY) and call `onSwapped(previous, next)`,
 * with what was promoted since the serving model was read, and (the
 * database away at start) once listening begins. Returns a stop function.
 * On PGlite (one instance) there is nothing to follow.
 */
export async function followPromotions(store: TrackingStore, scorer: Scorer, log: Logger, onSwapped: (previous: string, next: string) => void): Promise<() => Promise<void>> {
  let chain = Promise.resolve();
  const notYet = (err: unknown): void => log.warn({ err: (err as Error).message }, 'not following promotions of other instances yet (the database is away); trying again every second');
  return store.models.onPromoted((announced) => {
    chain = chain.then(async () => {
      if (announced === scorer.modelVersion) return;
      let version = announced;
      try {
        let m: ServingModel | undefined;
        if (version !== undefined) m = await registryModel(store, version, log);
        else
          // Catching up: the most recently promoted model this build can serve (a newer one of another feature spec is skipped).
          for (const v of await store.models.promotedVersions()) {
            if (v === scorer.modelVersion) return;
            if ((m = await registryModel(store, v, log)) !== undefined) {
              version = v;
              break;
            }
          }
        if (m === undefined || version === undefined) return;
        const previous = scorer.modelVersion;
        await scorer.replace(m.onnx, m.meta);
        log.info({ previous, version }, 'promoted model swapped in');
        onSwapped(previous, version);
      } catch (err) {
        log.error({ err: (err as Error).message, version }, 'promoted model could not be loaded; serving the previous one');
      }
    });
  }, notYet);
}
