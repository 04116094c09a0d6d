/**
 * The model registry as an op: `models` lists the trained scorers (version,
 * held-out metrics, samples, when trained, whether promoted), the version
 * this sidecar serves, and the learner's retraining figures. Read-only: the
 * dashboard's Models page and `prompt-engine call models` show it.
 */
import { float, record, type Term } from '../codec/terms.js';
import { integer } from '../contract/schema.js';
import { typedOp, type OpSpec } from './types.js';

const models = typedOp({
  name: 'models',
  summary: 'the model registry: every trained scorer with its held-out metrics, which are promoted, the version this sidecar serves, and the retraining figures',
  args: { limit: integer({ min: 1, max: 1000, default: 100, doc: 'at most this many models, the most recently trained first' }) },
  reply:
    '%{serving: version, promoted: [version] (most recent promotion first), models: [%{version, created_at, samples, metrics: %{auc, log_loss, accuracy, ece, spearman, ...}, promoted: boolean, feature_spec_hash}], learner: %{trainings, promotions, continuous, insufficient, busy, last_error, training: boolean}}',
  errors: { unavailable: 'the database is unreachable' },
  examples: [{}, { limit: 10 }],
  async handle({ limit }, { engine }) {
    const store = await engine.service('store');
    const [rows, promoted, scorer, learner] = await Promise.all([store.models.list(), store.models.promotedVersions(), engine.service('scorer'), engine.service('learner')]);
    return record({
      serving: scorer.modelVersion,
      promoted,
      models: rows.slice(0, limit).map((m) => {
        const metrics: Record<string, Term> = {};
        for (const [k, v] of Object.entries(m.metrics)) if (typeof v === 'number') metrics[k] = float(v);
        return record({ version: m.version, created_at: m.created_at, samples: m.samples, metrics: record(metrics), promoted: m.promoted, feature_spec_hash: m.feature_spec_hash });
      }),
      learner: record({ ...learner.figures, training: learner.training }),
    });
  },
});

export const modelOps: OpSpec<unknown>[] = [models];
