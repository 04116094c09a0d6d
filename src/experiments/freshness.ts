/**
 * Keeps a sidecar's view of the shared experiments within its staleness
 * bound. Every change to the loop's state (an outcome counted, a decision,
 * an operator's action, a new generation) is announced with NOTIFY on the
 * loop's channel, naming the experiments it moved; a notice from another
 * sidecar marks them for a refresh. Notices of counts (the counting
 * trigger's) arriving within a tenth of the bound share one refresh
 * (`coalesceMs`: each batch of outcomes another sidecar stores names every
 * experiment it moved, and a refresh reads each one's variants, so under
 * load a refresh per notice cost PostgreSQL more than storing the outcomes
 * did: BENCHMARKS.md, "A pool: one decides, the others serve"); a notice
 * that what to serve moved (a decision, an operator's action, a new
 * generation: `state`) is refreshed within 10 ms, with whatever else waits.
 *
 * PostgreSQL delivers notifications in commit order, so a notice this
 * sidecar sent and received back proves that every change committed before
 * it has been delivered: a heartbeat notice every `boundMs / 2.5` keeps that
 * proof fresh. When no heartbeat came back within the bound (the listening
 * connection dropped and is reconnecting, the server restarted), every
 * loaded experiment is refreshed, once per bound, until heartbeats return,
 * and once more when listening resumes (notices sent while nobody listened
 * are lost, and a heartbeat only proves what came after it). A sidecar that
 * could not listen at start (the database was away) keeps trying.
 * Either way a view is never older than the bound plus one refresh.
 *
 * PGlite has one process and no other sidecar: nothing to follow.
 */
import type { Logger } from 'pino';
import type { LoopNotice } from '../store/experimentRecords.js';
import type { TrackingStore } from '../store/trackingStore.js';
import { experimentKey } from './experiment.js';

/** Notices of counts arriving within this share of the staleness bound share one refresh (at least STATE_COALESCE_MS). */
const COALESCE_SHARE = 0.1;
/** Notices that the loop's state moved arriving within this many ms share one refresh. */
const STATE_COALESCE_MS = 10;

export const coalesceMs = (boundMs: number): number => Math.max(STATE_COALESCE_MS, Math.round(boundMs * COALESCE_SHARE));

export type RefreshRequest = ReadonlySet<string> | 'all';

export class Freshness {
  private dirty = new Set<string>();
  private dirtyAll = false;
  private timer: NodeJS.Timeout | undefined;
  /** When `timer` fires. */
  private dueAt = 0;
  private heartbeat: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> | undefined;
  private seq = 0;
  private readonly sentAt = new Map<number, number>();
  /** When the newest heartbeat that came back was sent. */
  private confirmedAt = Date.now();
  private lastFullRefresh = 0;
  private stopListening: (() => Promise<void>) | undefined;
  private closed = false;
  readonly figures = { notices: 0, refreshes: 0, full_refreshes: 0, heartbeats_missed: 0 };
  /** How every notice this sidecar sends begins (its sender first: loopNotice, the counting trigger). */
  private readonly ownPrefix: string;

  constructor(
    private readonly store: TrackingStore,
    private readonly log: Logger,
    private readonly boundMs: number,
    private readonly refresh: (what: RefreshRequest) => Promise<void>,
  ) {
    this.ownPrefix = `{"s":${JSON.stringify(store.experiments.notice.sender)},`;
  }

  /**
   * Heartbeats first, then listening. When the database cannot be reached
   * (a sidecar started during an outage), this rejects with why, and the
   * store keeps trying to listen meanwhile: no heartbeat comes back, so every
   * loaded experiment is refreshed once per bound until notices flow.
   */
  async start(): Promise<void> {
    const every = Math.max(10, Math.floor(this.boundMs / 2.5));
    this.heartbeat = setInterval(() => this.beat(), every);
    this.heartbeat.unref();
    let unreachable: unknown;
    // Notices sent while nobody listened (the database away at start, the connection reopened) are lost: a full refresh reads what they named.
    this.stopListening = await this.store.db.listen(
      this.store.experiments.notice.channel,
      (payload) => this.onNotice(payload),
      () => this.caughtUp(),
      (err) => (unreachable = err),
    );
    // Closed while the first try ran: close() found nothing to stop yet.
    if (this.closed) await this.stopListening();
    if (unreachable !== undefined) throw unreachable;
  }

  /** A full refresh now: what notices may have named while none could arrive. */
  private caughtUp(): void {
    this.log.info('listening again to other sidecars\' closed-loop changes: every loaded experiment refreshed');
    this.dirtyAll = true;
    this.schedule(0);
  }

  /** Milliseconds since the newest change this view is known to include was committed (heartbeat proof). */
  get lagMs(): number {
    return Date.now() - this.confirmedAt;
  }

  private beat(): void {
    const now = Date.now();
    if (now - this.confirmedAt > this.boundMs && now - this.lastFullRefresh >= this.boundMs) {
      this.figures.heartbeats_missed++;
      this.lastFullRefresh = now;
      this.dirtyAll = true;
      this.schedule(0);
    }
    // One heartbeat unanswered at a time: through a silent network each would hold a pooled connection until cut.
    if (this.beating) return;
    const seq = ++this.seq;
    this.sentAt.set(seq, now);
    if (this.sentAt.size > 100) this.sentAt.delete(seq - 100);
    const { channel, sender } = this.store.experiments.notice;
    this.beating = true;
    this.store.db
      .notify(channel, JSON.stringify({ s: sender, hb: seq } satisfies LoopNotice))
      .catch(() => undefined)
      .finally(() => (this.beating = false));
  }
  private beating = false;

  private onNotice(payload: string): void {
    // This sidecar's own changes (one per batch it writes) are in its view already: not even parsed.
    if (payload.startsWith(this.ownPrefix) && !payload.includes('"hb":')) return;
    let n: LoopNotice;
    try {
      n = JSON.parse(payload) as LoopNotice;
    } catch {
      return;
    }
    if (n.s === this.store.experiments.notice.sender) {
      const at = n.hb === undefined ? undefined : this.sentAt.get(n.hb);
      if (at !== undefined && at > this.confirmedAt) this.confirmedAt = at;
      return; // this sidecar's own changes are in its view already
    }
    if (n.hb !== undefined) return;
    this.figures.notices++;
    if (n.all === true) this.dirtyAll = true;
    else for (const [name, model] of n.k ?? []) this.dirty.add(experimentKey(name, model));
    this.schedule(n.state === true ? STATE_COALESCE_MS : coalesceMs(this.boundMs));
  }

  /** Refresh in `ms`, or sooner when a refresh is due sooner already. */
  private schedule(ms: number): void {
    if (this.closed) return;
    const due = Date.now() + ms;
    if (this.timer !== undefined) {
      if (this.dueAt <= due) return;
      clearTimeout(this.timer);
    }
    this.dueAt = due;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.run();
    }, ms);
    this.timer.unref();
  }

  private async run(): Promise<void> {
    if (this.refreshing !== undefined) {
      // One refresh at a time; what arrives meanwhile waits for the next.
      await this.refreshing;
      if (this.dirtyAll || this.dirty.size > 0) this.schedule(0);
      return;
    }
    const what: RefreshRequest = this.dirtyAll ? 'all' : this.dirty;
    this.dirtyAll = false;
    this.dirty = new Set();
    if (what === 'all') this.figures.full_refreshes++;
    else if (what.size === 0) return;
    this.figures.refreshes++;
    this.refreshing = this.refresh(what)
      .catch((err: unknown) => {
        this.log.debug({ err: (err as Error).message }, 'closed-loop refresh failed; retrying');
        this.dirtyAll = true;
        this.schedule(this.boundMs);
      })
      .finally(() => {
        this.refreshing = undefined;
      });
    await this.refreshing;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.heartbeat);
    if (this.timer !== undefined) clearTimeout(this.timer);
    await this.refreshing;
    await this.stopListening?.();
  }
}
