/**
 * central_cloud's template service over NATS, exactly as template_service.ex
 * speaks it (JSON bodies):
 *   central.template.get    {"template_id": name}      → {"template": {...}} | {"error": reason}
 *   central.template.search {"query": q, "opts": {...}} → {"templates": [...]} | {"error": reason}
 *   central.template.store  {...template...}           → {"template": {...}} | {"error": reason}
 *   publish template.analytics {template_id, ...usage}   (fire and forget)
 *   broadcast template.updated.<type>.<name>            (template JSON)
 *
 * Requests have a bounded timeout; analytics are batched in a bounded queue
 * and dropped (counted) while NATS is down, so no call ever waits on them.
 */
import { JSONCodec, type NatsConnection, type Subscription } from 'nats';
import type { NatsLink } from '../nats/link.js';
import { parseTemplate, type Template } from './template.js';

const json = JSONCodec<unknown>();

export class CentralCloudError extends Error {}

export interface AnalyticsEvent {
  template_id: string;
  [k: string]: string | number | boolean;
}

export class CentralCloudClient {
  private queue: AnalyticsEvent[] = [];
  private timer: NodeJS.Timeout | undefined;
  readonly figures = { requests: 0, failures: 0, analytics_sent: 0, analytics_dropped: 0, updates: 0 };
  private sub: Subscription | undefined;

  constructor(
    private readonly link: NatsLink,
    private readonly opts: { timeoutMs: number; maxQueue: number; flushMs: number } = { timeoutMs: 500, maxQueue: 1_000, flushMs: 250 },
  ) {}

  get connected(): boolean {
    return this.link.current() !== undefined;
  }

  /** At cold start, wait (bounded) for the first NATS connect before anything is decided without asking. */
  waitConnected(ms: number): Promise<boolean> {
    return this.link.waitConnected(ms);
  }

  /** undefined when central_cloud does not have it; throws CentralCloudError when it cannot answer. */
  async get(name: string): Promise<Template | undefined> {
    const body = await this.request('central.template.get', { template_id: name });
    if ('error' in body) {
      if (/not.?found/i.test(String(body.error))) return undefined;
      throw new CentralCloudError(`central_cloud: ${String(body.error)}`);
    }
    return parseTemplate(body.template, 'template');
  }

  async search(query: string, opts: Record<string, unknown>): Promise<Template[]> {
    const body = await this.request('central.template.search', { query, opts });
    if ('error' in body) throw new CentralCloudError(`central_cloud: ${String(body.error)}`);
    if (!Array.isArray(body.templates)) throw new CentralCloudError('central_cloud: search reply has no templates list');
    return body.templates.map((t, i) => parseTemplate(t, `templates[${i}]`));
  }

  async store(t: Template): Promise<Template> {
    const body = await this.request('central.template.store', t);
    if ('error' in body) throw new CentralCloudError(`central_cloud: ${String(body.error)}`);
    return parseTemplate(body.template, 'template');
  }

  /** Queue a usage event; never blocks, never throws. */
  recordUse(event: AnalyticsEvent): void {
    if (this.link.current() === undefined || this.queue.length >= this.opts.maxQueue) {
      this.figures.analytics_dropped++;
      return;
    }
    this.queue.push(event);
    if (this.timer === undefined) {
      this.timer = setTimeout(() => this.flushAnalytics(), this.opts.flushMs);
      this.timer.unref();
    }
  }

  flushAnalytics(): void {
    this.timer = undefined;
    const nc = this.link.current();
    const batch = this.queue.splice(0);
    if (nc === undefined) {
      this.figures.analytics_dropped += batch.length;
      return;
    }
    for (const e of batch) {
      try {
        nc.publish('template.analytics', json.encode(e));
        this.figures.analytics_sent++;
      } catch {
        this.figures.analytics_dropped++;
      }
    }
  }

  /** Follow `template.updated.>`; the subscription survives reconnects. */
  onUpdate(handler: (t: Template) => void): void {
    this.link.whenConnected((nc: NatsConnection) => {
      this.sub = nc.subscribe('template.updated.>', {
        callback: (err, msg) => {
          if (err) return;
          try {
            handler(parseTemplate(json.decode(msg.data), 'template'));
            this.figures.updates++;
          } catch {
            this.figures.failures++;
          }
        },
      });
    });
  }

  /** Run `f` each time the connection comes back after a drop: broadcasts sent meanwhile were missed. */
  onReconnect(f: () => void): void {
    this.link.onStatus((s) => {
      if (s.type === 'reconnect') f();
    });
  }

  close(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.flushAnalytics();
    this.sub?.unsubscribe();
  }

  private async request(subject: string, payload: unknown): Promise<Record<string, unknown>> {
    const nc = this.link.current();
    if (nc === undefined) throw new CentralCloudError('central_cloud: NATS is not connected');
    this.figures.requests++;
    try {
      const msg = await nc.request(subject, json.encode(payload), { timeout: this.opts.timeoutMs });
      const body = json.decode(msg.data);
      if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new CentralCloudError(`central_cloud: ${subject} answered with a non-object`);
      return body as Record<string, unknown>;
    } catch (err) {
      this.figures.failures++;
      if (err instanceof CentralCloudError) throw err;
      throw new CentralCloudError(`central_cloud: ${subject} failed: ${(err as Error).message}`);
    }
  }
}
