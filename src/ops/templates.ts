/**
 * Ops of the templates part: `generate_prompt` (the NIF's shape),
 * `get_template`, `search_templates`, `store_template`, `render_template`,
 * `get_sparc_prompt`, `list_templates`.
 *
 * generate_prompt picks its template by `template_id`; else by `category`
 * (a template name, or a template_type such as "sparc"); else by
 * `trigger_type`/`trigger_value` ("sparc"/"architecture" → sparc_architecture,
 * "mode"/"plan" → system_plan_mode, "analysis"/"<language>" →
 * <language>_code_analysis, "command"/... → general_command); else the
 * general command template. `confidence` says how direct that choice was.
 */
import { float, isTermObject, newMap, record, type Term, type TermObject } from '../codec/terms.js';
import { termToJson } from '../codec/json.js';
import { structureScore, type TemplateChoice } from '../templates/assembly.js';
import type { Vars } from '../templates/renderer.js';
import { CentralCloudError } from '../templates/centralCloud.js';
import { parseTemplate, templateRecord, type Template } from '../templates/template.js';
import { asString, optBool, optInt, optMap, optStr, storableTerm, str } from '../contract/args.js';
import type { ArgSchema, ArgSpec } from '../contract/schema.js';
import { defineOp, type OpSpec } from './types.js';
import { badRequest, OpError } from '../contract/errors.js';

const SPARC_PHASES = ['specification', 'pseudocode', 'architecture', 'refinement', 'completion'] as const;

/** The fields of a template map (central_cloud's PromptTemplate shape). */
const TEMPLATE_FIELDS: ArgSchema = {
  template_name: { type: 'string (letters, digits, _ . : -; 1..200)', required: true, doc: 'the template\'s name (its id for get_template)' },
  template_content: { type: 'string (Handlebars)', required: true, doc: 'the template text; must compile' },
  template_type: { type: 'string', required: true, doc: 'e.g. sparc, command, analysis' },
  language: { type: 'string', default: 'any', doc: 'the language it is for' },
  id: { type: 'string', doc: 'central_cloud\'s id' },
  package_id: { type: 'string', doc: 'central_cloud\'s package' },
  created_at: { type: 'string', doc: 'when it was made' },
};
const STRICT: ArgSpec = {
  type: 'boolean',
  default: true,
  doc: 'refuse (bad_request) naming every variable the template needs and the call does not give, and every one given that the template does not declare (a typo); false renders anyway',
};
/** generate_prompt picks a template for a loose context, so its variables are not expected to match: strict only when asked. */
const GENERATE_STRICT: ArgSpec = { ...STRICT, default: false, doc: 'refuse missing variables and context keys the chosen template does not declare (language, command and context are always allowed)' };
/** What generate_prompt adds to the variables itself. */
const GENERATE_IMPLICIT = ['language', 'command', 'context'] as const;
const VARIABLES: ArgSpec = { type: 'map', default: {}, doc: 'the template\'s variables' };

function varsOf(v: Term | undefined, field: string): Vars {
  if (v === undefined || v === null) return {};
  if (!isTermObject(v)) throw badRequest(field, 'expected a map of variables');
  return termToJson(storableTerm(v, field)) as Vars;
}

interface GenerateArgs extends TemplateChoice {
  context: Vars;
  strict: boolean;
}

const generatePrompt = defineOp<GenerateArgs>({
  name: 'generate_prompt',
  summary: 'assemble a prompt from a template for a context and language (the NIF shape)',
  args: {
    context: { type: 'string, or map of variables', required: true, doc: 'what the prompt is about (a string becomes the variables context and command)' },
    language: { type: 'string (1..100 characters)', required: true, doc: 'the programming language' },
    template_id: { type: 'string', doc: 'use this template' },
    category: { type: 'string', doc: 'a template name, or a template_type such as "sparc"' },
    trigger_type: { type: 'string', doc: 'with trigger_value: "sparc"/"architecture", "mode"/"plan", "analysis"/"<language>", "command"/...' },
    trigger_value: { type: 'string', doc: 'see trigger_type' },
    strict: GENERATE_STRICT,
  },
  reply: '%{prompt, confidence: float, template_used, optimization_score: float, cached: boolean}',
  errors: { not_found: 'template_id names no template' },
  examples: [{ context: 'a GenServer that caches HTTP responses', language: 'elixir' }, { context: { task: 'plan' }, language: 'rust', trigger_type: 'mode', trigger_value: 'plan' }],
  validate: (a) => {
    const ctx = a.context;
    const context: Vars = typeof ctx === 'string' ? { context: asString(ctx, 'context') } : varsOf(ctx, 'context');
    if (typeof ctx !== 'string' && !isTermObject(ctx)) throw badRequest('context', 'is required (a string or a map)');
    return {
      context,
      language: str(a, 'language', { min: 1, max: 100 }),
      templateId: optStr(a, 'template_id', { max: 200 }),
      triggerType: optStr(a, 'trigger_type', { max: 100 }),
      triggerValue: optStr(a, 'trigger_value', { max: 200 }),
      category: optStr(a, 'category', { max: 200 }),
      strict: optBool(a, 'strict') ?? false,
    };
  },
  async handle(a, { engine }) {
    const prompts = await engine.service('prompts');
    const { template, confidence } = await prompts.choose(a);
    const vars: Vars = { language: a.language, ...a.context };
    if (vars.command === undefined && typeof vars.context === 'string') vars.command = vars.context;
    const { prompt, cached } = prompts.cachedRender(template, vars, a.strict, GENERATE_IMPLICIT);
    prompts.noteUse(template, 'generate_prompt', a.language);
    return record({ prompt, confidence: float(confidence), template_used: template.template_name, optimization_score: float(structureScore(prompt)), cached });
  },
});

const getTemplate = defineOp<{ id: string }>({
  name: 'get_template',
  summary: 'a template by name (central_cloud first when connected, else the shipped copy)',
  args: { template_id: { type: 'string (1..200 characters)', required: true, doc: 'the template\'s name' } },
  reply: '%{template: %{template_name, template_content, template_type, language, ...}, source: "central_cloud" | "local"}',
  errors: { not_found: 'no template of that name' },
  examples: [{ template_id: 'sparc_specification' }],
  validate: (a) => ({ id: str(a, 'template_id', { min: 1, max: 200 }) }),
  async handle({ id }, { engine }) {
    const reg = await engine.service('templates');
    const hit = await reg.get(id);
    if (hit === undefined) throw new OpError('not_found', `no template named ${JSON.stringify(id)}`);
    return record({ template: templateRecord(hit.template), source: hit.source });
  },
});

const searchTemplates = defineOp<{ query: string; opts: TermObject }>({
  name: 'search_templates',
  summary: 'search templates by text (central_cloud when connected, else the local registry)',
  args: {
    query: { type: 'string', default: '', doc: 'words to match in names, types and content' },
    opts: { type: 'map', default: {}, doc: 'template_type, language, limit; passed on to central_cloud as they are' },
  },
  reply: '%{templates: [template], source: "central_cloud" | "local"}',
  examples: [{ query: 'sparc', opts: { limit: 5 } }],
  validate: (a) => ({ query: optStr(a, 'query', { max: 1000 }) ?? '', opts: storableTerm(optMap(a, 'opts') ?? newMap(), 'opts') }),
  async handle({ query, opts }, { engine }) {
    const reg = await engine.service('templates');
    const o = termToJson(opts) as Record<string, unknown>;
    if (reg.central?.connected) {
      try {
        const found = await reg.central.search(query, o);
        return record({ templates: found.map(templateRecord), source: 'central_cloud' });
      } catch {
        /* fall back to the local registry */
      }
    }
    const local = reg.searchLocal(query, { template_type: typeof o.template_type === 'string' ? o.template_type : undefined, language: typeof o.language === 'string' ? o.language : undefined, limit: typeof o.limit === 'number' ? o.limit : undefined });
    return record({ templates: local.map(templateRecord), source: 'local' });
  },
});

const storeTemplate = defineOp<{ template: Template }>({
  name: 'store_template',
  summary: 'store a template in central_cloud (local-only when not connected, said so in `stored`)',
  args: {
    template: { type: 'map (a template)', requiredWhen: 'unless the template fields are given at the top level', doc: 'the template', keys: TEMPLATE_FIELDS },
    ...TEMPLATE_FIELDS,
  },
  reply: '%{template: template, stored: "central_cloud" | "local"}',
  errors: { bad_request: 'the template content does not compile', conflict: 'central_cloud refused it' },
  examples: [
    { template: { template_name: 'greet', template_content: 'Hello {{name}}', template_type: 'command' } },
    { template_name: 'greet', template_content: 'Hello {{name}}', template_type: 'command', language: 'any', id: 'greet-1', package_id: 'team', created_at: '2026-11-24T00:00:00Z' },
  ],
  validate: (a) => ({ template: a.template !== undefined && a.template !== null ? parseTemplate(a.template, 'template') : parseTemplate(a, '') }),
  async handle({ template }, { engine }) {
    const reg = await engine.service('templates');
    try {
      reg.renderer.check(template.template_content);
    } catch (err) {
      throw new OpError('bad_request', `template.template_content: ${(err as Error).message}`);
    }
    const cache = await engine.service('cache');
    if (reg.central?.connected) {
      try {
        const stored = await reg.central.store(template);
        reg.put(stored);
        cache.invalidateTag(`template:${stored.template_name}`);
        return record({ template: templateRecord(stored), stored: 'central_cloud' });
      } catch (err) {
        if (err instanceof CentralCloudError && !/failed|not connected/.test(err.message)) throw new OpError('conflict', err.message);
      }
    }
    reg.put(template);
    cache.invalidateTag(`template:${template.template_name}`);
    return record({ template: templateRecord(template), stored: 'local' });
  },
});

const renderTemplate = defineOp<{ id: string; vars: Vars; strict: boolean }>({
  name: 'render_template',
  summary: 'render a template with variables',
  args: {
    template_id: { type: 'string (1..200 characters)', required: true, doc: 'the template\'s name' },
    variables: VARIABLES,
    strict: STRICT,
  },
  reply: '%{prompt, template_used, cached: boolean}',
  errors: { not_found: 'no template of that name', bad_request: 'variables are missing or not declared by the template (all named; unless strict: false), or the template does not compile' },
  examples: [{ template_id: 'sparc_specification', variables: { language: 'elixir', domain: 'payments', context: 'a rate limiter per API key' } }, { template_id: 'service_blueprint', variables: { language: 'go' }, strict: false }],
  validate: (a) => ({ id: str(a, 'template_id', { min: 1, max: 200 }), vars: varsOf(a.variables, 'variables'), strict: optBool(a, 'strict') ?? true }),
  async handle({ id, vars, strict }, { engine }) {
    const prompts = await engine.service('prompts');
    const t = await prompts.find(id);
    const { prompt, cached } = prompts.cachedRender(t, vars, strict);
    prompts.noteUse(t, 'render_template');
    return record({ prompt, template_used: t.template_name, cached });
  },
});

const getSparcPrompt = defineOp<{ phase: string; vars: Vars; strict: boolean }>({
  name: 'get_sparc_prompt',
  summary: 'the prompt of one SPARC phase',
  args: {
    name: { type: `one of: ${SPARC_PHASES.join(', ')} (a sparc_ prefix is allowed)`, required: true, doc: 'the phase' },
    variables: VARIABLES,
    strict: STRICT,
  },
  reply: '%{prompt, template_used, cached: boolean}',
  errors: { bad_request: 'variables are missing or not declared by the template (all named; unless strict: false)' },
  examples: [{ name: 'specification', variables: { language: 'elixir', domain: 'payments', context: 'a rate limiter per API key' } }],
  validate: (a) => {
    const name = str(a, 'name', { min: 1, max: 100 }).toLowerCase().replace(/^sparc_/, '');
    if (!(SPARC_PHASES as readonly string[]).includes(name)) throw badRequest('name', `expected one of ${SPARC_PHASES.join(', ')}`);
    return { phase: name, vars: varsOf(a.variables, 'variables'), strict: optBool(a, 'strict') ?? true };
  },
  async handle({ phase, vars, strict }, { engine }) {
    const prompts = await engine.service('prompts');
    const t = await prompts.find(`sparc_${phase}`);
    const { prompt, cached } = prompts.cachedRender(t, vars, strict);
    prompts.noteUse(t, 'get_sparc_prompt');
    return record({ prompt, template_used: t.template_name, cached });
  },
});

const listTemplates = defineOp<{ type?: string; limit: number }>({
  name: 'list_templates',
  summary: 'the templates the registry has, with the variables each declares (its own and those of its partials): what strict rendering accepts',
  args: {
    template_type: { type: 'string', doc: 'only templates of this type' },
    limit: { type: 'integer 1..10000', default: 1000, doc: 'at most this many' },
  },
  reply: '%{templates: [%{template_name, template_type, language, variables: [binary]}]}',
  examples: [{}, { template_type: 'sparc' }],
  validate: (a) => ({ type: optStr(a, 'template_type', { max: 100 }), limit: optInt(a, 'limit', { min: 1, max: 10_000 }) ?? 1_000 }),
  async handle({ type, limit }, { engine }) {
    const reg = await engine.service('templates');
    const list = reg.list().filter((t) => type === undefined || t.template_type === type).slice(0, limit);
    return record({ templates: list.map((t) => record({ template_name: t.template_name, template_type: t.template_type, language: t.language, variables: [...reg.renderer.declaredVariables(t.template_content)].sort() })) });
  },
});

export const templatesOps: OpSpec<unknown>[] = [generatePrompt, getTemplate, searchTemplates, storeTemplate, renderTemplate, getSparcPrompt, listTemplates] as OpSpec<unknown>[];
