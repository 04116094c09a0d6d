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
import { float, record, type TermObject } from '../codec/terms.js';
import { termToJson } from '../codec/json.js';
import { structureScore } from '../templates/assembly.js';
import { RENDER_LIMITS, type Vars } from '../templates/renderer.js';
import { MEMORY_LIMITS } from '../templates/registry.js';
import { CentralCloudError } from '../templates/centralCloud.js';
import { parseTemplate, templateRecord, TEMPLATE_FIELDS, TEMPLATE_NAME_MAX } from '../templates/template.js';
import { boolean, either, integer, oneOf, record as recordArg, string, variables, type ArgSchema, type ArgSpec } from '../contract/schema.js';
import { typedOp, type OpContext, type OpSpec } from './types.js';
import { OpError } from '../contract/errors.js';

const SPARC_PHASES = ['specification', 'pseudocode', 'architecture', 'refinement', 'completion'] as const;

const TEMPLATE_ID = string({ min: 1, max: TEMPLATE_NAME_MAX, required: true, doc: "the template's name" });
const STRICT = boolean({
  default: true,
  doc: 'refuse (bad_request) naming every variable the template needs and the call does not give, and every one given that the template does not declare (a typo)',
});
/** generate_prompt picks a template for a loose context, so its variables are not expected to match: strict only when asked. */
const GENERATE_STRICT = boolean({ default: false, doc: 'refuse missing variables and context keys the chosen template does not declare (language, command and context are always allowed)' });
/** What generate_prompt adds to the variables itself. */
const GENERATE_IMPLICIT = ['language', 'command', 'context'] as const;
const VARIABLES = variables({ default: {}, doc: "the template's variables" });

const vars = (m: TermObject): Vars => termToJson(m) as Vars;

/** A registry template rendered with the request's variables (render_template, get_sparc_prompt). */
async function renderNamed(engine: OpContext['engine'], templateId: string, a: { variables: TermObject; strict: boolean }, op: string): Promise<TermObject> {
  const prompts = await engine.service('prompts');
  const t = await prompts.find(templateId);
  const { prompt, cached } = prompts.cachedRender(t, vars(a.variables), a.strict);
  prompts.noteUse(t, op);
  return record({ prompt, template_used: t.template_name, cached });
}

const generatePrompt = typedOp({
  name: 'generate_prompt',
  summary: 'assemble a prompt from a template for a context and language (the NIF shape)',
  args: {
    context: either(string({ max: 100_000 }), variables({}), { required: true, doc: 'what the prompt is about (a string becomes the variables context and command)' }),
    language: string({ min: 1, max: 100, required: true, doc: 'the programming language' }),
    template_id: string({ max: TEMPLATE_NAME_MAX, doc: 'use this template' }),
    category: string({ max: 200, doc: 'a template name, or a template_type such as "sparc"' }),
    trigger_type: string({ max: 100, doc: 'with trigger_value: "sparc"/"architecture", "mode"/"plan", "analysis"/"<language>", "command"/...' }),
    trigger_value: string({ max: 200, doc: 'see trigger_type' }),
    strict: GENERATE_STRICT,
  },
  reply: '%{prompt, confidence: float, template_used, optimization_score: float, cached: boolean}',
  errors: { not_found: 'template_id names no template' },
  examples: [{ context: 'a GenServer that caches HTTP responses', language: 'elixir' }, { context: { task: 'plan' }, language: 'rust', trigger_type: 'mode', trigger_value: 'plan' }],
  refine: (a) => ({
    context: typeof a.context === 'string' ? { context: a.context } : vars(a.context),
    language: a.language,
    templateId: a.template_id,
    category: a.category,
    triggerType: a.trigger_type,
    triggerValue: a.trigger_value,
    strict: a.strict,
  }),
  async handle(a, { engine }) {
    const prompts = await engine.service('prompts');
    const { template, confidence } = await prompts.choose(a);
    const v: Vars = { language: a.language, ...a.context };
    if (v.command === undefined && typeof v.context === 'string') v.command = v.context;
    const { prompt, cached } = prompts.cachedRender(template, v, a.strict, GENERATE_IMPLICIT);
    prompts.noteUse(template, 'generate_prompt', a.language);
    return record({ prompt, confidence: float(confidence), template_used: template.template_name, optimization_score: float(structureScore(prompt)), cached });
  },
});

const getTemplate = typedOp({
  name: 'get_template',
  summary: 'a template by name (central_cloud first when connected, else the shipped copy)',
  args: { template_id: TEMPLATE_ID },
  reply: '%{template: %{template_name, template_content, template_type, language, ...}, source: "central_cloud" | "local"}',
  errors: { not_found: 'no template of that name' },
  examples: [{ template_id: 'sparc_specification' }],
  async handle({ template_id: id }, { engine }) {
    const reg = await engine.service('templates');
    const hit = await reg.get(id);
    if (hit === undefined) throw new OpError('not_found', `no template named ${JSON.stringify(id)}`);
    return record({ template: templateRecord(hit.template), source: hit.source });
  },
});

const searchTemplates = typedOp({
  name: 'search_templates',
  summary: 'search templates by text (central_cloud when connected, else the local registry)',
  args: {
    query: string({ max: 1000, default: '', doc: 'words to match in names, types and content' }),
    opts: variables({ default: {}, doc: 'template_type, language, limit; passed on to central_cloud as they are' }),
  },
  reply: '%{templates: [template], source: "central_cloud" | "local"}',
  examples: [{ query: 'sparc', opts: { limit: 5 } }],
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

/** The template fields at the top level (the other way to give them): required only when `template` is absent. */
const TOP_LEVEL_FIELDS: ArgSchema = Object.fromEntries(
  Object.entries(TEMPLATE_FIELDS as ArgSchema).map(([k, spec]): [string, ArgSpec] => [k, { ...spec, required: undefined, requiredWhen: spec.required === true ? 'unless template is given' : undefined }]),
);

const storeTemplate = typedOp({
  name: 'store_template',
  summary: 'store a template in central_cloud (local-only when not connected, said so in `stored`)',
  args: {
    template: { ...recordArg(TEMPLATE_FIELDS, { requiredWhen: 'unless the template fields are given at the top level', doc: 'the template' }), read: (v, f) => parseTemplate(v, f) },
    ...TOP_LEVEL_FIELDS,
  },
  reply: '%{template: template, stored: "central_cloud" | "local"}',
  errors: {
    bad_request: `the template content does not compile, or the sidecar holds its limit of templates in memory (${MEMORY_LIMITS.templates.toLocaleString('en-US')} templates, ${MEMORY_LIMITS.chars / 2 ** 20} MiB of content)`,
    conflict: 'central_cloud refused it',
  },
  examples: [
    { template: { template_name: 'greet', template_content: 'Hello {{name}}', template_type: 'command' } },
    { template_name: 'greet', template_content: 'Hello {{name}}', template_type: 'command', language: 'any', id: 'greet-1', package_id: 'team', created_at: '2026-11-24T00:00:00Z' },
  ],
  // Given as `template`, it was read by its spec; else the fields at the top level make it (the required ones checked there).
  refine: (a, raw) => ({ template: a.template ?? parseTemplate(raw, '') }),
  async handle({ template }, { engine }) {
    const reg = await engine.service('templates');
    const noRoom = (full: string): OpError => new OpError('bad_request', `template: ${full} (replacing a stored template of the same name takes no more room)`);
    // Refused before it is compiled (a refused template keeps nothing), and before central_cloud stores it;
    // checked again where it is put (another request may have filled the room meanwhile).
    const full = reg.roomFor(template);
    if (full !== undefined) throw noRoom(full);
    try {
      reg.renderer.check(template.template_content);
    } catch (err) {
      throw new OpError('bad_request', `template.template_content: ${(err as Error).message}`);
    }
    const cache = await engine.service('cache');
    if (reg.central?.connected) {
      try {
        const stored = await reg.central.store(template);
        reg.put(stored, 'central_cloud');
        cache.invalidateTag(`template:${stored.template_name}`);
        return record({ template: templateRecord(stored), stored: 'central_cloud' });
      } catch (err) {
        if (err instanceof CentralCloudError && !/failed|not connected/.test(err.message)) throw new OpError('conflict', err.message);
      }
    }
    const fullNow = reg.put(template, 'local');
    if (fullNow !== undefined) throw noRoom(fullNow);
    cache.invalidateTag(`template:${template.template_name}`);
    return record({ template: templateRecord(template), stored: 'local' });
  },
});

/** One render's limits, as the errors of the render ops name them. */
const RENDER_LIMITS_TEXT = `${RENDER_LIMITS.blocks.toLocaleString('en-US')} blocks (each iterations, if/unless/with bodies, partials) or ${RENDER_LIMITS.chars.toLocaleString('en-US')} characters`;

const renderTemplate = typedOp({
  name: 'render_template',
  summary: 'render a template with variables',
  args: { template_id: TEMPLATE_ID, variables: VARIABLES, strict: STRICT },
  reply: '%{prompt, template_used, cached: boolean}',
  errors: { not_found: 'no template of that name', bad_request: `variables are missing or not declared by the template (all named; unless strict: false), the template does not compile, or its render passed ${RENDER_LIMITS_TEXT}` },
  examples: [{ template_id: 'sparc_specification', variables: { language: 'elixir', domain: 'payments', context: 'a rate limiter per API key' } }, { template_id: 'service_blueprint', variables: { language: 'go' }, strict: false }],
  handle: (a, { engine }) => renderNamed(engine, a.template_id, a, 'render_template'),
});

const getSparcPrompt = typedOp({
  name: 'get_sparc_prompt',
  summary: 'the prompt of one SPARC phase',
  args: {
    name: oneOf(SPARC_PHASES, { required: true, normalize: (s) => s.toLowerCase().replace(/^sparc_/, ''), typeNote: '(a sparc_ prefix is allowed)', doc: 'the phase' }),
    variables: VARIABLES,
    strict: STRICT,
  },
  reply: '%{prompt, template_used, cached: boolean}',
  errors: { bad_request: `variables are missing or not declared by the template (all named; unless strict: false), or its render passed ${RENDER_LIMITS_TEXT}` },
  examples: [{ name: 'specification', variables: { language: 'elixir', domain: 'payments', context: 'a rate limiter per API key' } }],
  handle: (a, { engine }) => renderNamed(engine, `sparc_${a.name}`, a, 'get_sparc_prompt'),
});

const listTemplates = typedOp({
  name: 'list_templates',
  summary: 'the templates the registry has, with the variables each declares (its own and those of its partials): what strict rendering accepts',
  args: {
    template_type: string({ max: 100, doc: 'only templates of this type' }),
    limit: integer({ min: 1, max: 10_000, default: 1000, doc: 'at most this many' }),
  },
  reply: '%{templates: [%{template_name, template_type, language, variables: [binary]}]}',
  examples: [{}, { template_type: 'sparc' }],
  async handle({ template_type: type, limit }, { engine }) {
    const reg = await engine.service('templates');
    const list = reg.list().filter((t) => type === undefined || t.template_type === type).slice(0, limit);
    return record({ templates: list.map((t) => record({ template_name: t.template_name, template_type: t.template_type, language: t.language, variables: [...reg.renderer.declaredVariables(t.template_content)].sort() })) });
  },
});

export const templatesOps: OpSpec<unknown>[] = [generatePrompt, getTemplate, searchTemplates, storeTemplate, renderTemplate, getSparcPrompt, listTemplates];
