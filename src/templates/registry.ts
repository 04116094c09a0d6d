/**
 * The templates part, lookup: in-memory registry → central_cloud (when
 * NATS is configured and connected; bounded timeout; a failure falls back,
 * never fails the call) → the shipped `templates_data/`. No network is
 * needed for the shipped templates. Updates from central_cloud replace the
 * memory copy; the caller drops prompts cached from the old version. A copy
 * that came from central_cloud is asked for again at its first use after
 * NATS reconnects (`centralReconnected`): an update broadcast while the
 * connection was down never arrived.
 * Memory is bounded (MEMORY_LIMITS): a client storing templates gets an
 * answer at the limit instead of growing the sidecar.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { CentralCloudClient } from './centralCloud.js';
import { TemplateRenderer, type Vars } from './renderer.js';
import { parseTemplate, type Template } from './template.js';

export type TemplateSource = 'memory' | 'central_cloud' | 'shipped';

/** Templates held in memory (stored by clients, fetched from or broadcast by central_cloud), and names central_cloud lately did not have. */
export const MEMORY_LIMITS = { templates: 10_000, chars: 64 * 2 ** 20, misses: 10_000 } as const;

export class TemplateRegistry {
  readonly renderer = new TemplateRenderer();
  private readonly shipped = new Map<string, Template>();
  private readonly memory = new Map<string, Template>();
  /** Names held in memory whose copy came from central_cloud (fetched, broadcast, or stored there), not a local store_template. */
  private readonly fromCentral = new Set<string>();
  /** Of those, the ones to ask central_cloud for again before they serve (NATS reconnected since they came), each with when to ask. */
  private readonly unverified = new Map<string, number>();
  /** Characters of template content held in memory. */
  private memoryChars = 0;
  readonly figures = { lookups: 0, memory_hits: 0, central_hits: 0, shipped_hits: 0, central_fallbacks: 0, central_wrong_names: 0, central_revalidations: 0 };
  /** Told of a copy from central_cloud that changed, or is gone (undefined), when asked for again: the caller drops what was rendered from it. */
  onRevalidated: ((name: string, now: Template | undefined) => void) | undefined;

  constructor(
    shippedDir: string,
    readonly central: CentralCloudClient | undefined,
  ) {
    for (const file of fs.existsSync(shippedDir) ? fs.readdirSync(shippedDir).sort() : []) {
      if (!file.endsWith('.json')) continue;
      const t = parseTemplate(JSON.parse(fs.readFileSync(path.join(shippedDir, file), 'utf8')), file);
      this.renderer.check(t.template_content);
      this.shipped.set(t.template_name, t);
      if (t.template_type === 'partial') this.renderer.setPartial(t.template_name, t.template_content);
    }
  }

  get centralConnected(): boolean {
    return this.central?.connected ?? false;
  }

  async get(name: string): Promise<{ template: Template; source: TemplateSource } | undefined> {
    this.figures.lookups++;
    const mem = this.memory.get(name);
    if (mem !== undefined && !this.dueForRevalidation(name)) {
      this.figures.memory_hits++;
      return { template: mem, source: 'memory' };
    }
    if (mem !== undefined) return this.revalidate(name, mem);
    // At cold start NATS may not be connected yet: wait for it (bounded) rather than decide without asking.
    if (this.central !== undefined && !this.recentlyMissed(name) && (await this.central.waitConnected(this.connectWaitMs))) {
      try {
        let t = await this.central.get(name);
        // An answer for another name would be kept under that name, in place of its own template: not taken.
        if (t !== undefined && t.template_name !== name) {
          this.figures.central_wrong_names++;
          t = undefined;
        }
        if (t !== undefined) {
          this.put(t, 'central_cloud');
          this.figures.central_hits++;
          return { template: t, source: 'central_cloud' };
        }
        this.miss(name, Date.now()); // central_cloud said it has no such template
      } catch {
        this.figures.central_fallbacks++; // down or slow: the shipped copy serves; ask again a little later
        this.miss(name, Date.now() - this.missTtlMs + this.failureTtlMs);
      }
    }
    const s = this.shipped.get(name);
    if (s !== undefined) {
      this.figures.shipped_hits++;
      return { template: s, source: 'shipped' };
    }
    return undefined;
  }

  /**
   * NATS came back after a drop: every copy from central_cloud is asked for
   * again at its next lookup, and every remembered miss is forgotten.
   * Partials are asked for at once, one at a time, in the background: they
   * are used inside other templates' renders, which never look them up.
   */
  centralReconnected(): void {
    const now = Date.now();
    for (const name of this.fromCentral) this.unverified.set(name, now);
    this.missed.clear();
    const partials = [...this.fromCentral].filter((name) => this.memory.get(name)?.template_type === 'partial');
    if (partials.length === 0) return;
    void (async () => {
      for (const name of partials) {
        const held = this.memory.get(name);
        if (held !== undefined && this.dueForRevalidation(name)) await this.revalidate(name, held);
      }
    })();
  }

  private dueForRevalidation(name: string): boolean {
    const at = this.unverified.get(name);
    return at !== undefined && at <= Date.now() && this.central?.connected === true;
  }

  /**
   * Asks of central_cloud under way, by name, for one held copy: lookups of
   * that copy while it is asked share the answer (a copy put meanwhile gets
   * an ask of its own, so an answer never waits on itself).
   */
  private readonly revalidating = new Map<string, { held: Template; answer: Promise<{ template: Template; source: TemplateSource } | undefined> }>();

  /**
   * Ask central_cloud again for a copy it gave before NATS dropped. Changed:
   * the new one is held and `onRevalidated` told; gone from central_cloud:
   * the copy is dropped, `onRevalidated` told, and the lookup goes on as
   * for a name never held; no answer, or one that does not parse: the held
   * copy serves, and is asked for again after `failureTtlMs`. Never rejects.
   */
  private revalidate(name: string, held: Template): Promise<{ template: Template; source: TemplateSource } | undefined> {
    const asking = this.revalidating.get(name);
    if (asking !== undefined && asking.held === held) return asking.answer;
    const answer = this.askAgain(name, held).catch(() => ({ template: held, source: 'memory' as const }));
    this.revalidating.set(name, { held, answer });
    const done = (): void => {
      if (this.revalidating.get(name)?.answer === answer) this.revalidating.delete(name);
    };
    void answer.then(done);
    return answer;
  }

  private async askAgain(name: string, held: Template): Promise<{ template: Template; source: TemplateSource } | undefined> {
    this.figures.central_revalidations++;
    let fresh: Template | undefined;
    try {
      fresh = await this.central!.get(name);
      if (fresh !== undefined) this.renderer.check(fresh.template_content);
    } catch {
      this.figures.central_fallbacks++;
      // Only the copy asked about: another put meanwhile (a local store_template) is not central_cloud's to judge.
      if (this.memory.get(name) === held) this.unverified.set(name, Date.now() + this.failureTtlMs);
      this.figures.memory_hits++;
      return { template: this.memory.get(name) ?? held, source: 'memory' };
    }
    // Another request may have replaced or dropped it meanwhile: only the copy asked about is acted on.
    if (this.memory.get(name) !== held) return this.get(name);
    if (fresh === undefined || fresh.template_name !== name) {
      if (fresh !== undefined) this.figures.central_wrong_names++;
      this.drop(name);
      this.onRevalidated?.(name, undefined);
      return this.get(name);
    }
    this.unverified.delete(name);
    if (fresh.template_content !== held.template_content || fresh.template_type !== held.template_type || fresh.language !== held.language) {
      // No room for the new copy: the old one serves until the next reconnect's ask, and the caller hears nothing changed.
      if (this.put(fresh, 'central_cloud') === undefined) this.onRevalidated?.(name, fresh);
    }
    this.figures.central_hits++;
    return { template: this.memory.get(name) ?? held, source: 'central_cloud' };
  }

  private drop(name: string): void {
    const held = this.memory.get(name);
    if (held === undefined) return;
    this.memory.delete(name);
    this.memoryChars -= held.template_content.length;
    this.fromCentral.delete(name);
    this.unverified.delete(name);
    if (held.template_type !== 'partial') return;
    // `{{> name}}` goes back to the shipped partial of that name, or to none.
    const shipped = this.shipped.get(name);
    if (shipped?.template_type === 'partial') this.renderer.setPartial(name, shipped.template_content);
    else this.renderer.removePartial(name);
  }

  /**
   * Names central_cloud did not have lately: not asked again for `missTtlMs`,
   * so a template served from templates_data does not pay a NATS round trip
   * per use; a lookup that failed is retried after `failureTtlMs`. A miss is
   * only remembered when central_cloud was asked. An update broadcast for the
   * name ends it early.
   */
  private readonly missed = new Map<string, number>();
  missTtlMs = 30_000;
  /** How long a failed lookup (timeout, error) is remembered: shorter than a real miss. */
  failureTtlMs = 5_000;
  /** How long a lookup waits for the first NATS connect at cold start. */
  connectWaitMs = 2_000;

  private recentlyMissed(name: string): boolean {
    const at = this.missed.get(name);
    if (at === undefined) return false;
    if (Date.now() - at < this.missTtlMs) return true;
    this.missed.delete(name);
    return false;
  }

  /** Remember a miss; past MEMORY_LIMITS.misses the oldest is forgotten (it is only asked again). */
  private miss(name: string, at: number): void {
    this.missed.delete(name);
    this.missed.set(name, at);
    if (this.missed.size > MEMORY_LIMITS.misses) this.missed.delete(this.missed.keys().next().value!);
  }

  /** Why `t` cannot be held in memory (MEMORY_LIMITS), if it cannot. */
  roomFor(t: Template): string | undefined {
    const held = this.memory.get(t.template_name);
    if (held === undefined && this.memory.size >= MEMORY_LIMITS.templates) return `this sidecar holds ${MEMORY_LIMITS.templates.toLocaleString('en-US')} templates in memory, its limit`;
    if (this.memoryChars - (held?.template_content.length ?? 0) + t.template_content.length > MEMORY_LIMITS.chars)
      return `this sidecar holds ${MEMORY_LIMITS.chars.toLocaleString('en-US')} characters of templates in memory at most, and this one would pass it`;
    return undefined;
  }

  /**
   * Put a template in memory (a fetch, a local store, an update broadcast),
   * saying where its copy came from; when MEMORY_LIMITS leave no room it is
   * not held, and the answer says why (roomFor).
   */
  put(t: Template, from: 'central_cloud' | 'local'): string | undefined {
    this.missed.delete(t.template_name);
    this.renderer.check(t.template_content);
    const full = this.roomFor(t);
    if (full !== undefined) return full;
    this.memoryChars += t.template_content.length - (this.memory.get(t.template_name)?.template_content.length ?? 0);
    this.memory.set(t.template_name, t);
    this.unverified.delete(t.template_name);
    if (from === 'central_cloud') this.fromCentral.add(t.template_name);
    else this.fromCentral.delete(t.template_name);
    if (t.template_type === 'partial') this.renderer.setPartial(t.template_name, t.template_content);
    return undefined;
  }

  /** Every known template (memory copies override shipped ones), sorted by name. */
  list(): Template[] {
    const all = new Map(this.shipped);
    for (const [k, v] of this.memory) all.set(k, v);
    return [...all.values()].sort((a, b) => a.template_name.localeCompare(b.template_name));
  }

  /** Local search: every word of the query in the name, type, language or content. */
  searchLocal(query: string, opts: { template_type?: string; language?: string; limit?: number } = {}): Template[] {
    const words = query.toLowerCase().split(/\s+/).filter(Boolean);
    return this.list()
      .filter((t) => (opts.template_type === undefined || t.template_type === opts.template_type) && (opts.language === undefined || t.language === opts.language || t.language === 'any'))
      .map((t) => {
        const name = `${t.template_name} ${t.template_type} ${t.language}`.toLowerCase();
        const body = t.template_content.toLowerCase();
        const score = words.reduce((s, w) => s + (name.includes(w) ? 3 : body.includes(w) ? 1 : -100), 0);
        return { t, score };
      })
      .filter((x) => x.score > 0 || words.length === 0)
      .sort((a, b) => b.score - a.score || a.t.template_name.localeCompare(b.t.template_name))
      .slice(0, opts.limit ?? 20)
      .map((x) => x.t);
  }

  render(t: Template, vars: Vars, strict: boolean, implicit: readonly string[] = []): string {
    return this.renderer.render(t.template_content, vars, { strict, implicit });
  }

  /** Partials a template includes, directly or through another partial (their updates must drop prompts built from it too). */
  partialsOf(t: Template): string[] {
    return [...this.renderer.partialsIncluded(t.template_content)];
  }
}
