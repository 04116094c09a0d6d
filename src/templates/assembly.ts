/**
 * Prompt assembly: which template a request means (by id, category or
 * trigger), rendering it with the request's variables, and the cached
 * prompt for (template, variables), tagged so an update of the template or
 * of a partial it includes drops it. The ops of the templates part and the
 * closed loop (`choose_prompt` with a `template_id`) both assemble here.
 */
import { createHash } from 'node:crypto';
import { OpError } from '../contract/errors.js';
import { ENGINE_KEYS, type PromptCache } from '../cache/promptCache.js';
import type { TemplateRegistry } from './registry.js';
import { closest } from '../contract/schema.js';
import { TemplateLimitError, TemplateSyntaxError, TemplateVariablesError, type Vars } from './renderer.js';
import type { Template } from './template.js';

export interface TemplateChoice {
  templateId?: string;
  category?: string;
  triggerType?: string;
  triggerValue?: string;
  language: string;
}

export class PromptAssembler {
  constructor(
    readonly registry: TemplateRegistry,
    private readonly cache: PromptCache,
  ) {}

  async find(name: string): Promise<Template> {
    const hit = await this.registry.get(name);
    if (hit === undefined) throw new OpError('not_found', `no template named ${JSON.stringify(name)}`);
    return hit.template;
  }

  /**
   * Render, turning template faults into `bad_request` that name what is
   * wrong: with `strict`, every missing variable and every given one the
   * template does not declare (with the name it probably meant). `implicit`:
   * variables the caller adds itself (generate_prompt's language).
   */
  render(t: Template, vars: Vars, strict: boolean, implicit: readonly string[] = []): string {
    try {
      return this.registry.render(t, vars, strict, implicit);
    } catch (err) {
      if (err instanceof TemplateVariablesError) throw new OpError('bad_request', variablesMessage(t.template_name, err));
      if (err instanceof TemplateSyntaxError || err instanceof TemplateLimitError) throw new OpError('bad_request', `template ${t.template_name}: ${err.message}`);
      throw err;
    }
  }

  /** The cached prompt for (template, variables). */
  cachedRender(t: Template, vars: Vars, strict: boolean, implicit: readonly string[] = []): { prompt: string; cached: boolean } {
    const key = `${ENGINE_KEYS.prompt}${t.template_name}:${createHash('sha256').update(t.template_content).update(JSON.stringify(vars)).update(String(strict)).update(implicit.join(',')).digest('hex')}`;
    const hit = this.cache.get(key);
    if (hit.found) return { prompt: String(hit.value), cached: true };
    const prompt = this.render(t, vars, strict, implicit);
    this.cache.put(key, prompt, [`template:${t.template_name}`, ...this.registry.partialsOf(t).map((p) => `template:${p}`)]);
    return { prompt, cached: false };
  }

  /** Tell central_cloud the template was used (batched, best effort). */
  noteUse(t: Template, op: string, language?: string): void {
    this.registry.central?.recordUse({ template_id: t.template_name, op, language: language ?? t.language, used_at: new Date().toISOString() });
  }

  /** The template a request means, and how direct that choice was (`confidence`). */
  async choose(a: TemplateChoice): Promise<{ template: Template; confidence: number }> {
    const reg = this.registry;
    if (a.templateId !== undefined) return { template: await this.find(a.templateId), confidence: 1 };
    const all = reg.list().filter((t) => t.template_type !== 'partial');
    const lang = a.language.toLowerCase();
    if (a.category !== undefined) {
      const c = a.category.toLowerCase();
      const byName = await reg.get(c);
      if (byName !== undefined && byName.template.template_type !== 'partial') return { template: byName.template, confidence: 0.95 };
      const byType = all.filter((t) => t.template_type === c);
      const pick = byType.find((t) => t.language === lang) ?? byType[0] ?? all.find((t) => t.template_name.includes(c));
      // Looked up by name, as every other choice: a copy from central_cloud is asked for again after NATS reconnected
      // (and one central_cloud no longer has is not chosen).
      const fresh = pick === undefined ? undefined : await reg.get(pick.template_name);
      if (fresh !== undefined && fresh.template.template_type !== 'partial') return { template: fresh.template, confidence: 0.85 };
    }
    if (a.triggerType !== undefined) {
      const type = a.triggerType.toLowerCase();
      const value = (a.triggerValue ?? '').toLowerCase().trim();
      const candidates: string[] = [];
      if (type === 'sparc' || type === 'phase') candidates.push(`sparc_${value || 'specification'}`);
      if (type === 'mode' || type === 'system') candidates.push(`system_${value}_mode`, `system_${value}`);
      if (type === 'analysis' || type === 'review') candidates.push(`${value || lang}_code_analysis`, `${lang}_code_analysis`);
      if (type === 'blueprint' || type === 'service') candidates.push('service_blueprint');
      if (type === 'flow' || type === 'coordination') candidates.push('flow_coordination');
      candidates.push(...all.filter((t) => t.template_type === type && (value === '' || t.template_name.includes(value))).map((t) => t.template_name));
      for (const name of candidates) {
        const hit = await reg.get(name);
        if (hit !== undefined && hit.template.template_type !== 'partial') return { template: hit.template, confidence: 0.75 };
      }
    }
    return { template: await this.find('general_command'), confidence: 0.5 };
  }
}

/** A cheap structural score of an assembled prompt (role, steps, format, constraints), 0..1. */
export function structureScore(p: string): number {
  let s = 0.4;
  if (/^\s*you are/im.test(p)) s += 0.15;
  if (/^\s*\d+\./m.test(p)) s += 0.15;
  if (/output rules|format/i.test(p)) s += 0.15;
  if (/\b(must|never|do not|always)\b/i.test(p)) s += 0.1;
  return Math.min(1, s);
}

/** `variables: missing a, b; task is not a variable of sparc_specification (did you mean context?; it takes ...)`. */
function variablesMessage(name: string, err: TemplateVariablesError): string {
  const parts: string[] = [];
  if (err.missing.length > 0) parts.push(`missing ${err.missing.join(', ')}`);
  if (err.unknown.length > 0) {
    const hints = err.unknown.map((u) => closest(u, err.declared)).filter((x): x is string => x !== undefined);
    const hint = hints.length > 0 ? `did you mean ${hints.join(', ')}? ` : '';
    const takes = err.declared.length === 0 ? 'it takes none' : `it takes ${err.declared.join(', ')}`;
    parts.push(`${err.unknown.join(', ')} ${err.unknown.length === 1 ? 'is not a variable' : 'are not variables'} of ${name} (${hint}${takes})`);
  }
  return `variables: ${parts.join('; ')}; pass strict: false to render anyway`;
}
