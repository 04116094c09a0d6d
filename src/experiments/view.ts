/**
 * This sidecar's view of the shared experiments: the ones it has used
 * lately, each an `Experiment` built from the store and kept current by
 * refreshes and by the counts its own writes return. Bounded: past
 * `maxExperiments` the least recently used is dropped from memory (the
 * store keeps it; its next use loads it again), so a client that makes up
 * experiment names cannot grow the sidecar without limit.
 */
import type { ExperimentSnapshot } from '../store/experimentRecords.js';
import { Experiment, experimentKey, type LoopPolicy } from './experiment.js';

export class LoopView {
  private readonly byKey = new Map<string, Experiment>();
  evicted = 0;

  constructor(
    private readonly policy: LoopPolicy,
    private readonly maxExperiments: number,
    /** An experiment the view must not drop now (the decider is writing its decisions). */
    private readonly pinnedInMemory: (key: string) => boolean = () => false,
    /** Told when an experiment leaves the view (dropped or evicted): what is kept beside it per experiment goes too. */
    private readonly forgotten: (key: string) => void = () => undefined,
    /** Told of every snapshot from the store the view takes (what was last read of it is kept on disk). */
    private readonly adopted: (s: ExperimentSnapshot) => void = () => undefined,
  ) {}

  get size(): number {
    return this.byKey.size;
  }

  get(key: string): Experiment | undefined {
    return this.byKey.get(key);
  }

  /** Mark as just used (the least recently used is the first to go). */
  touch(exp: Experiment): void {
    if (this.byKey.get(exp.key) !== exp) return;
    this.byKey.delete(exp.key);
    this.byKey.set(exp.key, exp);
  }

  values(): IterableIterator<Experiment> {
    return this.byKey.values();
  }

  keys(): string[] {
    return [...this.byKey.keys()];
  }

  /** Hold `exp` (replacing what the view had under its key), dropping the least recently used past the limit. */
  put(exp: Experiment): Experiment {
    this.byKey.delete(exp.key);
    this.byKey.set(exp.key, exp);
    if (this.byKey.size > this.maxExperiments)
      for (const [key] of this.byKey) {
        if (this.byKey.size <= this.maxExperiments) break;
        if (key === exp.key || this.pinnedInMemory(key)) continue;
        this.byKey.delete(key);
        this.evicted++;
        this.forgotten(key);
      }
    return exp;
  }

  /** Take a snapshot from the store: into the experiment the view holds, or as a new one (a new generation replaces the old). */
  adopt(s: ExperimentSnapshot): Experiment {
    const key = experimentKey(s.row.name, s.row.model);
    const held = this.byKey.get(key);
    if (held !== undefined && held.generation > s.row.generation) return held;
    this.adopted(s);
    if (held !== undefined && held.generation === s.row.generation) {
      held.adopt(s);
      return held;
    }
    return this.put(Experiment.fromSnapshot(s, this.policy));
  }

  drop(key: string): void {
    if (this.byKey.delete(key)) this.forgotten(key);
  }
}
