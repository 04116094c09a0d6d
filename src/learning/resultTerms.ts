/**
 * A training result as the contract returns it (the `train` op's reply and
 * the `model_trained` event), each metric beside the model it belongs to:
 * `metrics` are the new model's (`model_version`), `serving_metrics` those of
 * the model that served when training began (`previous_version`), both on
 * the same held-out split; `serving_version` is what serves now.
 */
import { float, record, type TermObject } from '../codec/terms.js';
import type { TrainResult } from './learner.js';
import type { HeldOutMetrics, UnseenMetrics } from './heldOut.js';

const metricsRecord = (m: HeldOutMetrics): TermObject =>
  record({ auc: float(m.auc), log_loss: float(m.log_loss), accuracy: float(m.accuracy), ece: float(m.ece), spearman: float(m.spearman), examples: m.examples });

const unseenRecord = (m: UnseenMetrics | undefined): TermObject | null =>
  m === undefined ? null : record({ tasks: m.tasks, groups: m.groups, spearman: float(m.spearman), regret: float(m.regret) });

export function trainRecord(r: Exclude<TrainResult, { insufficient: number } | { busy: true }>): TermObject {
  return record({
    model_version: r.modelVersion,
    samples: r.samples,
    epochs: r.epochs,
    metrics: metricsRecord(r.metrics),
    serving_metrics: r.servingMetrics ? metricsRecord(r.servingMetrics) : null,
    previous_version: r.previousVersion,
    unseen_metrics: unseenRecord(r.unseen),
    serving_unseen_metrics: unseenRecord(r.servingUnseen),
    promoted: r.promoted,
    serving_version: r.servingVersion,
    duration_ms: r.durationMs,
  });
}
