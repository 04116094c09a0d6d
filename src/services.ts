/**
 * Layer: services (the composition root of that layer). The one place that
 * lists the engine's services, their types, how each is built from the
 * others and how it closes: `createEngine` returns an `Engine<Services>`
 * whose `service('store')` is typed. Ops and transports import only the
 * `AppEngine` type from here.
 */
import path from 'node:path';
import { PromptCache } from './cache/promptCache.js';
import { float, record } from './codec/terms.js';
import type { EngineConfig } from './config.js';
import { OpError } from './contract/errors.js';
import { Engine, type ServiceDefinitions } from './engine.js';
import { followPromotions, servingModel } from './learning/modelSync.js';
import { Scorer } from './learning/scorer.js';
import { EmbeddingService, SHIPPED_EMBEDDINGS } from './learning/embeddings.js';
import type { Logger } from './log.js';
import { NatsLink } from './nats/link.js';
import { OptimizerDeps } from './optimizer/deps.js';
import { FallbackProposer, LlmProposer, OfflineProposer } from './optimizer/proposers.js';
import { DEFAULT_POLICY } from './experiments/experiment.js';
import { ExperimentService } from './experiments/service.js';
import { Learner } from './learning/learner.js';
import { trainRecord } from './learning/resultTerms.js';
import { TrackingStore } from './store/trackingStore.js';
import { PromptAssembler } from './templates/assembly.js';
import { CentralCloudClient } from './templates/centralCloud.js';
import { TemplateRegistry } from './templates/registry.js';
import type { Template } from './templates/template.js';

export type Services = {
  cache: PromptCache;
  /** The engine's one NATS connection (central_cloud, peer mode); undefined when NATS is not configured. */
  nats: NatsLink | undefined;
  store: TrackingStore;
  embeddings: EmbeddingService;
  scorer: Scorer;
  templates: TemplateRegistry;
  prompts: PromptAssembler;
  optimizer: OptimizerDeps;
  learner: Learner;
  experiments: ExperimentService;
};

export type AppEngine = Engine<Services>;

/** Declared after what they use: the engine closes them in reverse declaration order. */
export const SERVICE_DEFINITIONS: ServiceDefinitions<Services> = {
  cache: {
    create: (engine) => new PromptCache(engine.config.cacheMaxEntries, engine.config.cacheMaxBytes),
    stats: (c) => {
      const s = c.stats();
      return record({ ...s, hit_rate: float(s.hit_rate) });
    },
  },

  nats: {
    create: (engine) => (engine.config.nats.servers.length === 0 ? undefined : new NatsLink(engine.config.nats, engine.log.child({ part: 'nats' }))),
    close: (link) => link?.close(),
  },

  store: {
    create: (engine) =>
      TrackingStore.open({ databaseUrl: engine.config.databaseUrl, dataDir: engine.config.dataDir, schema: engine.config.dbSchema, instanceId: engine.instanceId, log: engine.log.child({ part: 'store' }) }).catch((err: unknown) => {
        // e.g. a PGlite directory held by another sidecar: the caller gets {:error, {:unavailable, why}}
        throw new OpError('unavailable', `tracking store: ${(err as Error).message}`);
      }),
    close: (s) => s.close(),
    stats: (s) => s.figures,
  },

  // Prompt embeddings: memory, then the shipped file, then the store, then the worker thread (written back to the store).
  embeddings: {
    create: (engine) =>
      new EmbeddingService({
        maxEntries: engine.config.embeddingCacheEntries,
        store: () => engine.service('store'),
        shippedFiles: [path.join(engine.config.modelsDir, path.basename(SHIPPED_EMBEDDINGS))],
        log: engine.log.child({ part: 'embeddings' }),
      }),
    close: (e) => e.close(),
    stats: (e) => record({ model: e.model, entries: e.size, ...e.figures }),
  },

  // The last promoted model of the registry (its bytes, from the table), else the shipped default;
  // then every promotion made by any instance sharing the database, hot-swapped within a second.
  scorer: {
    create: async (engine) => {
      const log = engine.log.child({ part: 'scorer' });
      const store = await engine.service('store').catch(() => undefined);
      const m = await servingModel(store, engine.config.modelsDir, log);
      const scorer = await Scorer.load(m.onnx, m.meta, async (texts, signal) => (await engine.service('embeddings')).embed(texts, signal), log);
      if (store !== undefined) {
        const stop = await followPromotions(store, scorer, log, (previous, version) => modelPromoted(engine, previous, version, 'another instance')).catch((err: unknown) => {
          log.warn({ err: (err as Error).message }, 'not following promotions of other instances');
          return undefined;
        });
        if (stop !== undefined) scorer.onClose(stop);
      }
      return scorer;
    },
    close: (s) => s.close(),
    stats: (s) => record({ model_version: s.modelVersion, samples: s.info.samples }),
  },

  // The shipped templates, with central_cloud behind them when NATS is configured. An update broadcast
  // replaces the registry's copy, drops every cached prompt built from that template (or a partial it
  // includes), and tells the Port owner with an `{:event, :template_updated, ...}` frame.
  templates: {
    create: async (engine) => {
      const link = await engine.service('nats');
      const central = link === undefined ? undefined : new CentralCloudClient(link, { timeoutMs: engine.config.centralCloudTimeoutMs, maxQueue: 1_000, flushMs: 250 });
      const registry = new TemplateRegistry(engine.config.templatesDir, central);
      const cache = await engine.service('cache');
      const updated = (t: Template): void => {
        const dropped = cache.invalidateTag(`template:${t.template_name}`);
        engine.log.info({ template: t.template_name, dropped }, 'template updated by central_cloud');
        engine.emit('template_updated', record({ template_name: t.template_name, template_type: t.template_type, language: t.language, dropped }));
      };
      central?.onUpdate((t) => {
        registry.put(t, 'central_cloud');
        updated(t);
      });
      // Broadcasts sent while NATS was down never arrive: copies from central_cloud are asked for again at their next use.
      central?.onReconnect(() => registry.centralReconnected());
      registry.onRevalidated = (name, now) => {
        if (now !== undefined) return updated(now);
        const dropped = cache.invalidateTag(`template:${name}`);
        engine.log.info({ template: name, dropped }, 'template dropped: central_cloud no longer has it');
      };
      return registry;
    },
    close: (r) => r.central?.close(),
    stats: (r) => record({ ...r.figures, templates: r.list().length, central_connected: r.centralConnected, ...(r.central ? r.central.figures : {}) }),
  },

  prompts: {
    create: async (engine) => new PromptAssembler(await engine.service('templates'), await engine.service('cache')),
  },

  optimizer: {
    create: (engine) => new OptimizerDeps({ scorer: () => engine.service('scorer'), store: () => engine.service('store') }, engine.log.child({ part: 'optimizer' })),
  },

  learner: {
    create: (engine) =>
      new Learner(
        {
          store: () => engine.service('store'),
          scorer: () => engine.service('scorer'),
          embeddings: () => engine.service('embeddings'),
          retrainCorpus: engine.config.retrainCorpus,
          modelsDir: engine.config.modelsDir,
          trainedDir: path.join(engine.config.dataDir, 'models'),
          log: engine.log.child({ part: 'learner' }),
          onPromoted: (previous, r) => {
            if ('modelVersion' in r) modelPromoted(engine, previous, r.modelVersion, 'this instance');
          },
          onTrained: (r) => {
            if ('modelVersion' in r) engine.emit('model_trained', trainRecord(r));
          },
        },
        engine.config.retrainEvery,
      ),
    stats: (l) => record({ ...l.figures, training: l.training }),
  },

  // The closed loop. Proposals come from the LLM when one is configured, else (or when it fails) offline.
  experiments: {
    create: (engine) => {
      const log = engine.log.child({ part: 'experiments' });
      const c = engine.config;
      const llm = c.llmUrl === undefined ? undefined : new LlmProposer({ url: c.llmUrl, model: c.llmModel, apiKey: c.llmApiKey, timeoutMs: 30_000 }, 'loop');
      return ExperimentService.start({
        store: () => engine.service('store'),
        scorer: () => engine.service('scorer'),
        embeddings: () => engine.service('embeddings'),
        learner: () => engine.service('learner'),
        proposer: new FallbackProposer(llm, new OfflineProposer(), log),
        log,
        policy: { ...DEFAULT_POLICY, ...c.loopPolicy },
        awaitProposals: c.loopAwaitProposals,
        maxExperiments: c.loopMaxExperiments,
        stalenessMs: c.loopStalenessMs,
        leaseRetryMs: c.loopLeaseRetryMs,
        dataDir: c.dataDir,
      });
    },
    close: (x) => x.close(),
    stats: (x) => record(x.stats()),
  },
};

/**
 * A new model serves here: drop results cached under the old one, tell the
 * Port owner (`{:event, :model_promoted, ...}`), and, when this instance made
 * it, announce it on NATS too (`prompt_engine.model.promoted`).
 */
function modelPromoted(engine: AppEngine, previous: string, version: string, by: 'this instance' | 'another instance'): void {
  void engine.startedService('cache').then((c) => c?.invalidateTag(`model:${previous}`));
  engine.emit('model_promoted', record({ model_version: version, previous_version: previous, promoted_by: by }));
  if (by === 'this instance')
    void engine.startedService('nats').then((link) => {
      const nc = link?.current();
      nc?.publish('prompt_engine.model.promoted', JSON.stringify({ model_version: version, previous_version: previous }));
    });
}

/** One backing dependency as `health` reports it. */
export interface DependencyCheck {
  status: 'ok' | 'down' | 'not_started' | 'not_configured';
  detail: string;
}

/**
 * Probe what the engine depends on over the network, for `health`: the
 * database (PostgreSQL with DATABASE_URL: `SELECT 1` within `timeoutMs`;
 * embedded PGlite only once something tried to open it, since opening it is
 * not free: after a failed open — a data directory held by another sidecar —
 * the open is tried again, which fails at once while the holder lives, and
 * reported `down` with its reason) and NATS (when NATS_URL is set). Never throws.
 */
export async function probeDependencies(engine: AppEngine, timeoutMs = 1_000): Promise<{ database: DependencyCheck; nats: DependencyCheck }> {
  const database = async (): Promise<DependencyCheck> => {
    const pglite = engine.config.databaseUrl === undefined;
    if (pglite && !engine.startedServices.includes('store') && engine.startFailure('store') === undefined)
      return { status: 'not_started', detail: 'embedded PGlite, opened on first use' };
    let store: TrackingStore;
    try {
      store = await engine.service('store');
    } catch (err) {
      return { status: 'down', detail: (err as Error).message };
    }
    const problem = await store.ping(timeoutMs);
    const journal = store.journalDepth > 0 ? `; ${store.journalDepth} tracking entries wait in the journal` : '';
    if (problem !== undefined) return { status: 'down', detail: `${store.backend}: ${problem}${journal}` };
    return { status: 'ok', detail: `${store.backend}${journal}` };
  };
  const nats = async (): Promise<DependencyCheck> => {
    if (engine.config.natsUrl === undefined) return { status: 'not_configured', detail: 'NATS_URL is not set' };
    const link = await engine.service('nats').catch(() => undefined);
    if (link === undefined) return { status: 'down', detail: 'no NATS connection could be made' };
    // Right after start the first connect may still be under way: wait for it briefly.
    await link.waitConnected(Math.min(timeoutMs, 500));
    const problem = link.problem;
    return problem === undefined ? { status: 'ok', detail: 'connected' } : { status: 'down', detail: problem };
  };
  const [d, n] = await Promise.all([database(), nats()]);
  return { database: d, nats: n };
}

export function createEngine(config: EngineConfig, log: Logger): AppEngine {
  return new Engine<Services>(config, log, SERVICE_DEFINITIONS);
}
