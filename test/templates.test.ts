/**
 * Templates: every shipped template renders, strict mode (the default) names
 * every missing and every undeclared variable, the docs' render examples
 * render, template content cannot reach prototypes, and central_cloud's
 * contract over a real nats-server (a responder that speaks
 * template_service.ex's subjects and JSON shapes): get/search/store round
 * trips, an update broadcast changes the next generate_prompt and drops the
 * cached prompt, and a down or slow central_cloud falls back in time.
 */
import fs from 'node:fs';
import path from 'node:path';
import { connect, JSONCodec, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErlFloat, record, type TermObject } from '../src/codec/terms.js';
import { REPO_ROOT } from '../src/config.js';
import { COMPILED_LIMITS, TemplateRenderer } from '../src/templates/renderer.js';
import { MEMORY_LIMITS } from '../src/templates/registry.js';
import { localEngine, type LocalEngine } from './helpers/engine.js';
import { PortClient } from './helpers/portClient.js';
import { requireEnv } from './helpers/pg.js';
import { doorTo } from './helpers/door.js';
import { until } from './helpers/poll.js';
import { okValue } from './helpers/results.js';

const json = JSONCodec<Record<string, unknown>>();
const ok = okValue;

const realistic = {
  language: 'elixir',
  framework: 'phoenix',
  domain: 'billing',
  project: 'ledger',
  context: 'Issue invoices monthly and retry failed card payments with backoff.',
  constraints: ['money is integer cents', 'idempotent webhooks'],
  command: 'add a retry policy',
  arguments: { max_attempts: '5' },
  service_name: 'invoicer',
  code: 'fn main() { let v: Vec<u8> = Vec::new(); println!("{}", v.len()); }',
  crate_name: 'ledger-core',
  agents: ['planner', 'coder', 'reviewer'],
  specification: 'FR-1: invoices are issued on the 1st.',
  os: 'Debian',
};

describe('shipped templates', () => {
  const dir = path.join(REPO_ROOT, 'templates_data');
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.json'));
  let pe: LocalEngine;
  beforeAll(() => {
    pe = localEngine();
  });
  afterAll(() => pe.close());
  /** store_template of `content` under `name` (a command unless `type` says otherwise), which must succeed. */
  const store = async (name: string, content: string, type = 'command'): Promise<void> => void ok(await pe.call('store_template', record({ template: record({ template_name: name, template_type: type, language: 'any', template_content: content }) })));

  it('ship the required set in central_cloud PromptTemplate shape', () => {
    const names = files.map((f) => (JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as { template_name: string }).template_name);
    for (const n of ['sparc_specification', 'sparc_pseudocode', 'sparc_architecture', 'sparc_refinement', 'sparc_completion', 'system_plan_mode', 'system_beast_mode', 'system_cli_mode', 'flow_coordination', 'rust_code_analysis', 'general_command', 'service_blueprint'])
      expect(names).toContain(n);
    for (const f of files) {
      const t = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as Record<string, unknown>;
      expect(Object.keys(t).sort()).toEqual(expect.arrayContaining(['template_content', 'template_name', 'template_type', 'language']));
      expect(Object.keys(t).every((k) => ['template_name', 'template_content', 'template_type', 'language', 'id', 'package_id', 'created_at'].includes(k))).toBe(true);
    }
  });

  it('render every template strictly with a realistic context, no leftovers, no HTML escaping', async () => {
    const all = ok(await pe.call('list_templates', record({}))).templates as TermObject[];
    const listed = new Map(all.map((t) => [String(t.template_name), (t.variables as string[]).map(String)]));
    for (const f of files) {
      const t = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as { template_name: string; template_type: string };
      if (t.template_type === 'partial') continue;
      // Strict (the default) refuses variables a template does not declare: give each the ones it lists.
      const declared = new Set(listed.get(t.template_name));
      const vars = Object.fromEntries(Object.entries(realistic).filter(([k]) => declared.has(k)));
      const r = ok(await pe.call('render_template', record({ template_id: t.template_name, variables: vars as unknown as TermObject })));
      const prompt = String(r.prompt);
      expect(prompt, t.template_name).not.toMatch(/\{\{|\}\}/);
      expect(prompt.length).toBeGreaterThan(200);
      if (prompt.includes('println')) expect(prompt).toContain('println!("{}", v.len());'); // quotes not &quot;
    }
  });

  it('strict mode (the default) names every missing variable at once; strict: false renders them empty', async () => {
    const r = await pe.call('render_template', record({ template_id: 'service_blueprint', variables: record({ language: 'go' }) }));
    expect(r).toEqual({ ok: false, reason: 'bad_request', message: 'variables: missing domain, service_name, context; pass strict: false to render anyway' });
    expect(await pe.call('render_template', record({ template_id: 'service_blueprint', variables: record({ language: 'go' }), strict: true }))).toEqual(r);
    const lenient = ok(await pe.call('render_template', record({ template_id: 'service_blueprint', variables: record({ language: 'go' }), strict: false })));
    expect(String(lenient.prompt)).toContain('production go service');
  });

  it('strict mode refuses a variable the template does not declare (a typo), naming it and the one it probably meant', async () => {
    // The old docs' own example: `task` is no variable of sparc_specification, and rendered "a  system" without a word.
    const typo = await pe.call('render_template', record({ template_id: 'sparc_specification', variables: record({ task: 'a rate limiter', language: 'elixir', domain: 'payments', contxt: 'x' }) }));
    expect(typo).toMatchObject({ ok: false, reason: 'bad_request' });
    const m = !typo.ok ? typo.message : '';
    expect(m).toMatch(/^variables: missing context; task, contxt are not variables of sparc_specification \(did you mean context\? it takes constraints, context, domain, framework, language, output_format, project\); pass strict: false/);
    // Variables of included partials are declared too (project, constraints: context_block; output_format: output_rules).
    const full = ok(await pe.call('render_template', record({ template_id: 'sparc_specification', variables: record({ language: 'elixir', domain: 'payments', context: 'x', project: 'ledger', output_format: 'markdown' }) })));
    expect(String(full.prompt)).toContain('Project: ledger');
    expect(String(full.prompt)).toContain('Format: markdown');
    // get_sparc_prompt is strict by default too; generate_prompt only when asked, and its own language/context/command never count as unknown.
    expect(await pe.call('get_sparc_prompt', record({ name: 'specification', variables: record({ task: 'x' }) }))).toMatchObject({ ok: false, reason: 'bad_request' });
    expect(ok(await pe.call('generate_prompt', record({ context: record({ task: 'x' }), language: 'elixir' }))).template_used).toBe('general_command');
    const strictGen = await pe.call('generate_prompt', record({ context: record({ tsak: 'x', context: 'c' }), language: 'elixir', template_id: 'sparc_specification', strict: true }));
    expect(!strictGen.ok && strictGen.message).toMatch(/missing domain; tsak is not a variable of sparc_specification/);
  });

  it('cannot reach prototypes or run code from template content', () => {
    const r = new TemplateRenderer();
    const data = { name: 'x', nested: { a: 1 } };
    const evil = [
      '{{constructor}}',
      '{{__proto__}}',
      '{{constructor.name}}',
      '{{lookup this "constructor"}}',
      '{{#with __proto__}}{{polluted}}{{/with}}',
      '{{#with constructor}}{{name}}{{/with}}',
      '{{nested.constructor.constructor}}',
      '{{#with "s"}}{{#with split as |a|}}{{pop (push "alert(1)")}}{{/with}}{{/with}}',
      '{{log "x"}}',
    ];
    for (const tpl of evil) {
      let out = '';
      try {
        out = r.render(tpl, data);
      } catch {
        out = '';
      }
      expect(out, tpl).not.toMatch(/function|Object|\[native code\]|alert/);
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it("stops a render past RENDER_LIMITS (nested each over @root, partials that double) with bad_request, and keeps serving", async () => {
    // 1000^4 iterations: hours of one thread if nothing counted them
    await store('nested_each', '{{#each a}}{{#each @root.a}}{{#each @root.a}}{{#each @root.a}}x{{/each}}{{/each}}{{/each}}{{/each}}');
    const list = Array.from({ length: 1000 }, (_, i) => i);
    const nested = await pe.call('render_template', record({ template_id: 'nested_each', variables: record({ a: list }) }));
    expect(nested).toMatchObject({ ok: false, reason: 'bad_request' });
    expect((nested as { message: string }).message).toMatch(/^template nested_each: rendering stopped: more than 100,000 blocks/);
    // each level includes the one below twice: 2^40 characters
    await store('dbl_0', 'abcdefgh', 'partial');
    for (let i = 1; i <= 40; i++) await store(`dbl_${i}`, `{{> dbl_${i - 1}}}{{> dbl_${i - 1}}}`, 'partial');
    await store('doubling', '{{> dbl_40}}');
    const doubled = await pe.call('render_template', record({ template_id: 'doubling', variables: record({}) }));
    expect(doubled).toMatchObject({ ok: false, reason: 'bad_request' });
    expect((doubled as { message: string }).message).toMatch(/rendering stopped: a block's output passed 4,000,000 characters|more than 100,000 blocks/);
    // within the limits the same shapes render, partials and each alike
    expect(ok(await pe.call('render_template', record({ template_id: 'nested_each', variables: record({ a: [1, 2, 3] }) }))).prompt).toBe('x'.repeat(81));
    await store('doubling_small', '{{> dbl_3}}');
    expect(ok(await pe.call('render_template', record({ template_id: 'doubling_small', variables: record({}) }))).prompt).toBe('abcdefgh'.repeat(8));
    // The same doubling with partials defined inline ({{#*inline}}), writing nothing: 2^18 calls, no output to measure.
    const inline = ['{{#*inline "i0"}}{{/inline}}', ...Array.from({ length: 18 }, (_, i) => `{{#*inline "i${i + 1}"}}{{> i${i}}}{{> i${i}}}{{/inline}}`), '{{> i18}}'].join('');
    await store('inline_doubling', inline);
    const inlined = await pe.call('render_template', record({ template_id: 'inline_doubling', variables: record({}) }));
    expect(inlined).toMatchObject({ ok: false, reason: 'bad_request' });
    expect((inlined as { message: string }).message).toMatch(/more than 100,000 blocks/);
    // ... and through a partial block's {{> @partial-block}} too
    await store('twice_block', '{{> @partial-block}}{{> @partial-block}}', 'partial');
    await store('block_doubling', '{{#> twice_block}}'.repeat(18) + '{{/twice_block}}'.repeat(18));
    const blocks = await pe.call('render_template', record({ template_id: 'block_doubling', variables: record({}) }));
    expect(blocks).toMatchObject({ ok: false, reason: 'bad_request' });
    expect((blocks as { message: string }).message).toMatch(/more than 100,000 blocks/);
  });

  it("keeps a variable whose name a partial also has: only {{> name}} includes the partial", async () => {
    await store('topic', 'a partial that happens to be called topic', 'partial');
    await store('about_topic', 'Write about {{topic}}.');
    expect(ok(await pe.call('render_template', record({ template_id: 'about_topic', variables: record({ topic: 'cats' }) }))).prompt).toBe('Write about cats.');
    await store('includes_topic', '{{> topic}}: {{subject}}');
    expect(ok(await pe.call('render_template', record({ template_id: 'includes_topic', variables: record({ subject: 'dogs' }) }))).prompt).toBe('a partial that happens to be called topic: dogs');
  });

  it("drops a cached render when a partial it reaches through another partial changes, not only one it names", async () => {
    await store('sign_off', 'Regards, v1', 'partial');
    await store('footer', '-- {{> sign_off}}', 'partial');
    await store('letter_body', 'Dear {{name}}', 'partial');
    await store('letter', '{{#> letter_body}}{{/letter_body}} {{> footer}}');
    const args = record({ template_id: 'letter', variables: record({ name: 'Ada' }) });
    expect(ok(await pe.call('render_template', args))).toMatchObject({ prompt: 'Dear Ada -- Regards, v1', cached: false });
    expect(ok(await pe.call('render_template', args))).toMatchObject({ prompt: 'Dear Ada -- Regards, v1', cached: true });
    // Two levels down: letter -> footer -> sign_off.
    await store('sign_off', 'Regards, v2', 'partial');
    expect(ok(await pe.call('render_template', args))).toMatchObject({ prompt: 'Dear Ada -- Regards, v2', cached: false });
    // A partial block ({{#> name}}) is a dependency too.
    await store('letter_body', 'Hello {{name}}', 'partial');
    expect(ok(await pe.call('render_template', args))).toMatchObject({ prompt: 'Hello Ada -- Regards, v2', cached: false });
  });

  it('holds at most MEMORY_LIMITS of stored templates: store_template past it is refused naming the limit, a replacement still fits', async () => {
    const own = localEngine();
    try {
      const store = (name: string, content: string) => own.call('store_template', record({ template: record({ template_name: name, template_type: 'command', language: 'any', template_content: content }) }));
      // by count; the last room asked for by two requests at once: one is stored, the other refused (never both answered stored)
      for (let i = 0; i < MEMORY_LIMITS.templates - 1; i++) ok(await store(`t${i}`, `template ${i} for {{context}}`));
      const both = await Promise.all([store('last_a', 'a {{context}}'), store('last_b', 'b {{context}}')]);
      expect(both.filter((r) => r.ok).length).toBe(1);
      const over = both.find((r) => !r.ok)!;
      expect(over).toMatchObject({ ok: false, reason: 'bad_request' });
      expect((over as { message: string }).message).toContain(`holds ${MEMORY_LIMITS.templates.toLocaleString('en-US')} templates in memory`);
      const renders = await Promise.all(['last_a', 'last_b'].map((t) => own.call('render_template', record({ template_id: t, variables: record({ context: 'c' }) }))));
      expect(renders.map((r) => r.ok)).toEqual(both.map((r) => r.ok));
      // A template refused for want of room keeps nothing: it is not even compiled.
      const compiled = ((await own.engine.service('templates')).renderer as unknown as { compiled: Map<string, unknown> }).compiled;
      expect(await store('one_more', 'x {{refused_and_never_compiled}}')).toMatchObject({ ok: false, reason: 'bad_request' });
      expect([...compiled.keys()].some((k) => k.includes('refused_and_never_compiled'))).toBe(false);
      ok(await store('t7', 'replaced {{context}}'));
      expect(ok(await own.call('render_template', record({ template_id: 't7', variables: record({ context: 'c' }) }))).prompt).toBe('replaced c');
    } finally {
      await own.close();
    }
    const big = localEngine();
    try {
      // by size: 1,000,000 characters each (the largest template_content)
      const content = `${'y'.repeat(999_989)}{{context}}`;
      const results = [];
      for (let i = 0; i * 1_000_000 <= MEMORY_LIMITS.chars; i++) results.push(await big.call('store_template', record({ template: record({ template_name: `big${i}`, template_type: 'command', language: 'any', template_content: content }) })));
      expect(results.filter((r) => r.ok).length).toBe(Math.floor(MEMORY_LIMITS.chars / content.length));
      expect(results.at(-1)).toMatchObject({ ok: false, reason: 'bad_request' });
      expect((results.at(-1) as { message: string }).message).toContain('characters of templates in memory');
    } finally {
      await big.close();
    }
  }, 120_000);

  it("refuses cache_put under the engine's own key prefixes (a rendered prompt or an optimize result would be served from it)", async () => {
    for (const key of ['prompt:sparc_specification:0123', 'optimize:abc']) {
      const r = await pe.call('cache_put', record({ key, value: 'anything' }));
      expect(r).toMatchObject({ ok: false, reason: 'bad_request', message: expect.stringMatching(/^key: keys starting with "(prompt|optimize):" are the engine's own/) });
    }
    ok(await pe.call('cache_put', record({ key: 'mine:prompt:x', value: 'kept' })));
    expect(ok(await pe.call('cache_get', record({ key: 'mine:prompt:x' })))).toMatchObject({ found: true, value: 'kept' });
  });

  it('keeps compiled templates within COMPILED_LIMITS of characters, whatever is rendered', () => {
    const renderer = new TemplateRenderer();
    const held = (): number => [...(renderer as unknown as { compiled: Map<string, unknown> }).compiled.keys()].reduce((n, k) => n + k.length, 0);
    // 200 different sources of 1,000,000 characters each: 200 MB of sources if all were kept.
    for (let i = 0; i < 200; i++) {
      renderer.check(`${String(i).padStart(3, '0')}${'z'.repeat(999_997)}`);
      expect(held()).toBeLessThanOrEqual(COMPILED_LIMITS.chars);
    }
  });

  it('keeps the partial names it remembers by source within COMPILED_LIMITS of characters, whatever is asked', () => {
    const renderer = new TemplateRenderer();
    const held = (): number => [...(renderer as unknown as { partialNames: Map<string, unknown> }).partialNames.keys()].reduce((n, k) => n + k.length, 0);
    // 200 different sources of 1,000,000 characters each (asked for their partials, as the prompt cache does at a miss).
    for (let i = 0; i < 200; i++) {
      renderer.partialsIncluded(`${String(i).padStart(3, '0')}{{> p}}${'z'.repeat(999_990)}`);
      expect(held()).toBeLessThanOrEqual(COMPILED_LIMITS.chars);
    }
  });

  it('generate_prompt keeps the NIF shape and picks templates by id, category and trigger', async () => {
    const byId = ok(await pe.call('generate_prompt', record({ context: 'plan a migration', language: 'elixir', template_id: 'system_plan_mode' })));
    expect(byId).toMatchObject({ template_used: 'system_plan_mode' });
    expect(byId.confidence).toEqual(new ErlFloat(1));
    expect(byId.optimization_score).toBeInstanceOf(ErlFloat);
    expect(String(byId.prompt)).toContain('PLAN MODE');
    expect(ok(await pe.call('generate_prompt', record({ context: 'x', language: 'elixir', category: 'sparc_architecture' }))).template_used).toBe('sparc_architecture');
    expect(ok(await pe.call('generate_prompt', record({ context: 'x', language: 'elixir', trigger_type: 'mode', trigger_value: 'beast' }))).template_used).toBe('system_beast_mode');
    expect(ok(await pe.call('generate_prompt', record({ context: 'x', language: 'rust', trigger_type: 'analysis' }))).template_used).toBe('rust_code_analysis');
    expect(ok(await pe.call('generate_prompt', record({ context: 'x', language: 'elixir' }))).template_used).toBe('general_command');
    expect(await pe.call('generate_prompt', record({ context: 'x', language: 'elixir', template_id: 'nope' }))).toMatchObject({ ok: false, reason: 'not_found' });
    expect(await pe.call('generate_prompt', record({ context: 'x' }))).toMatchObject({ ok: false, reason: 'bad_request', message: 'language: is required (a string)' });
  });
});

/** A stand-in for central_cloud's template_service.ex: same subjects, same JSON. */
async function startCentralCloud(url: string, opts: { delayMs?: number } = {}) {
  const nc = await connect({ servers: url });
  const store = new Map<string, Record<string, unknown>>([
    ['cloud_only', { id: 'c1', template_name: 'cloud_only', template_type: 'command', language: 'any', template_content: 'From the cloud: {{context}}' }],
  ]);
  const delay = () => new Promise((r) => setTimeout(r, opts.delayMs ?? 0));
  nc.subscribe('central.template.get', {
    callback: async (_e, m) => {
      await delay();
      const { template_id } = json.decode(m.data) as { template_id: string };
      const t = store.get(template_id);
      m.respond(json.encode(t ? { template: t } : { error: 'not_found' }));
    },
  });
  nc.subscribe('central.template.search', {
    callback: async (_e, m) => {
      await delay();
      const { query } = json.decode(m.data) as { query: string; opts: unknown };
      m.respond(json.encode({ templates: [...store.values()].filter((t) => String(t.template_name).includes(query)) }));
    },
  });
  nc.subscribe('central.template.store', {
    callback: async (_e, m) => {
      await delay();
      const t = json.decode(m.data) as Record<string, unknown>;
      if (typeof t.template_name !== 'string' || typeof t.template_content !== 'string') return m.respond(json.encode({ error: 'invalid_template' }));
      const saved = { ...t, id: t.id ?? `c${store.size + 1}`, created_at: '2026-11-24T12:00:00Z' };
      store.set(t.template_name, saved);
      m.respond(json.encode({ template: saved }));
      nc.publish(`template.updated.${String(t.template_type)}.${t.template_name}`, json.encode(saved));
    },
  });
  const analytics: unknown[] = [];
  nc.subscribe('template.analytics', { callback: (_e, m) => analytics.push(json.decode(m.data)) });
  await nc.flush();
  return { nc, store, analytics, close: () => nc.close() };
}

describe('central_cloud over NATS', () => {
  let url: string;
  let cloud: Awaited<ReturnType<typeof startCentralCloud>>;
  let pe: LocalEngine;
  beforeAll(async () => {
    url = requireEnv('TEST_NATS_URL');
    cloud = await startCentralCloud(url);
    pe = localEngine({ natsUrl: url });
    const reg = await pe.engine.service('templates');
    for (let i = 0; i < 50 && !reg.centralConnected; i++) await new Promise((r) => setTimeout(r, 50));
    expect(reg.centralConnected).toBe(true);
  });
  afterAll(async () => {
    await pe.close();
    await cloud.close();
  });

  it('gets, searches and stores through template_service.ex subjects', async () => {
    const got = ok(await pe.call('get_template', record({ template_id: 'cloud_only' })));
    expect(got).toMatchObject({ source: 'central_cloud', template: { template_name: 'cloud_only', id: 'c1' } });
    const again = ok(await pe.call('get_template', record({ template_id: 'cloud_only' })));
    expect(again.source).toBe('memory');
    const shipped = ok(await pe.call('get_template', record({ template_id: 'sparc_completion' })));
    expect(shipped.source).toBe('shipped'); // central_cloud answered not_found: the shipped copy serves
    const found = ok(await pe.call('search_templates', record({ query: 'cloud', opts: record({ limit: 5 }) })));
    expect(found).toMatchObject({ source: 'central_cloud', templates: [{ template_name: 'cloud_only' }] });
    const stored = ok(await pe.call('store_template', record({ template: record({ template_name: 'team_rules', template_type: 'command', language: 'any', template_content: 'Rules v1 for {{context}}' }) })));
    expect(stored).toMatchObject({ stored: 'central_cloud', template: { template_name: 'team_rules', created_at: '2026-11-24T12:00:00Z' } });
    expect(cloud.store.has('team_rules')).toBe(true);
  });

  it('takes no answer for another name than the one asked for (it would replace that template)', async () => {
    cloud.store.set('asks_for_one', { id: 'c9', template_name: 'sparc_completion', template_type: 'command', language: 'any', template_content: 'not the shipped one' });
    expect(await pe.call('get_template', record({ template_id: 'asks_for_one' }))).toMatchObject({ ok: false, reason: 'not_found' });
    const shipped = ok(await pe.call('get_template', record({ template_id: 'sparc_completion' })));
    expect(shipped.source).toBe('shipped');
    expect(String((shipped.template as TermObject).template_content)).not.toContain('not the shipped one');
  });

  it('an update broadcast changes the next generate_prompt and drops the cached prompt', async () => {
    const events: string[] = [];
    pe.engine.events.on('event', (e: { name: string }) => events.push(e.name));
    const args = record({ context: 'deploy', language: 'elixir', template_id: 'team_rules' });
    const first = ok(await pe.call('generate_prompt', args));
    expect(first.prompt).toBe('Rules v1 for deploy');
    expect(ok(await pe.call('generate_prompt', args)).cached).toBe(true);
    const before = ok(await pe.call('cache_stats', record({}))).invalidations as number;
    cloud.nc.publish('template.updated.command.team_rules', json.encode({ template_name: 'team_rules', template_type: 'command', language: 'any', template_content: 'Rules v2 for {{context}}' }));
    await cloud.nc.flush();
    for (let i = 0; i < 500 && !events.includes('template_updated'); i++) await new Promise((r) => setTimeout(r, 20));
    expect(events).toContain('template_updated');
    expect(ok(await pe.call('cache_stats', record({}))).invalidations).toBeGreaterThan(before);
    const second = ok(await pe.call('generate_prompt', args));
    expect(second).toMatchObject({ prompt: 'Rules v2 for deploy', cached: false });
  });

  it('publishes template.analytics for template uses', async () => {
    await pe.call('render_template', record({ template_id: 'sparc_refinement', variables: record({ context: 'x' }), strict: false }));
    for (let i = 0; i < 500 && !cloud.analytics.some((a) => (a as { template_id: string }).template_id === 'sparc_refinement'); i++) await new Promise((r) => setTimeout(r, 20));
    expect(cloud.analytics).toContainEqual(expect.objectContaining({ template_id: 'sparc_refinement', op: 'render_template' }));
  });
});

describe('central_cloud at cold start', () => {
  it('serves a template that lives only in central_cloud on the first call after start', async () => {
    const url = requireEnv('TEST_NATS_URL');
    const cloud = await startCentralCloud(url);
    try {
      // The first call arrives before NATS is connected: it waits for the connection instead of answering not_found.
      const c = new PortClient({ env: { NATS_URL: url, DATABASE_URL: '', LOG_LEVEL: 'warn' } });
      await c.ready;
      const r = await c.request('render_template', record({ template_id: 'cloud_only', variables: record({ context: 'a cold start' }) }));
      expect(r).toMatchObject({ ok: true, value: { prompt: 'From the cloud: a cold start' } });
      const again = await c.request('get_template', record({ template_id: 'cloud_only' }));
      expect(again).toMatchObject({ ok: true, value: { source: 'memory' } });
      await c.close();
    } finally {
      await cloud.close();
    }
  }, 30_000);
});

describe('central_cloud after NATS drops and comes back', () => {
  it('asks again for a copy it holds from central_cloud: an update broadcast while NATS was down is not missed for good', async () => {
    const url = requireEnv('TEST_NATS_URL');
    const cloud = await startCentralCloud(url);
    const door = await doorTo(url, { open: true });
    const pe = localEngine({ natsUrl: door.url });
    try {
      const reg = await pe.engine.service('templates');
      await until(() => reg.centralConnected, 10_000);
      cloud.store.set('drifting', { id: 'd1', template_name: 'drifting', template_type: 'command', language: 'any', template_content: 'Drift v1 for {{context}}' });
      cloud.store.set('vanishing', { id: 'd2', template_name: 'vanishing', template_type: 'command', language: 'any', template_content: 'Soon gone' });
      cloud.store.set('cloud_footer', { id: 'd3', template_name: 'cloud_footer', template_type: 'partial', language: 'any', template_content: 'Footer v1' });
      // A partial held from central_cloud, used inside another template's render (which never looks it up).
      expect(ok(await pe.call('get_template', record({ template_id: 'cloud_footer' }))).source).toBe('central_cloud');
      cloud.store.set('cloud_header', { id: 'd4', template_name: 'cloud_header', template_type: 'partial', language: 'any', template_content: 'Header v1' });
      expect(ok(await pe.call('get_template', record({ template_id: 'cloud_header' }))).source).toBe('central_cloud');
      ok(await pe.call('store_template', record({ template: record({ template_name: 'uses_footer', template_type: 'command', language: 'any', template_content: 'Body. {{> cloud_footer}}' }) })));
      const withFooter = record({ template_id: 'uses_footer', variables: record({}) });
      expect(ok(await pe.call('render_template', withFooter))).toMatchObject({ prompt: 'Body. Footer v1' });
      expect(ok(await pe.call('render_template', withFooter))).toMatchObject({ prompt: 'Body. Footer v1', cached: true });
      const args = record({ template_id: 'drifting', variables: record({ context: 'x' }) });
      expect(ok(await pe.call('render_template', args))).toMatchObject({ prompt: 'Drift v1 for x', cached: false });
      expect(ok(await pe.call('render_template', args))).toMatchObject({ prompt: 'Drift v1 for x', cached: true });
      expect(ok(await pe.call('get_template', record({ template_id: 'vanishing' }))).source).toBe('central_cloud');

      door.close();
      await until(() => !reg.centralConnected, 10_000);
      // central_cloud changes one and deletes the other; the broadcast goes to nobody this sidecar hears.
      const v2 = { id: 'd1', template_name: 'drifting', template_type: 'command', language: 'any', template_content: 'Drift v2 for {{context}}' };
      cloud.store.set('drifting', v2);
      cloud.nc.publish('template.updated.command.drifting', json.encode(v2));
      cloud.store.delete('vanishing');
      cloud.store.set('cloud_footer', { id: 'd3', template_name: 'cloud_footer', template_type: 'partial', language: 'any', template_content: 'Footer v2' });
      // ... and breaks another: an answer that does not parse is not taken (nor does it stop anything).
      cloud.store.set('cloud_header', { id: 'd4', template_name: 'cloud_header', template_type: 'partial', language: 'any', template_content: '{{#each items}} never closed' });
      await cloud.nc.flush();
      // While NATS is away the held copy serves.
      expect(ok(await pe.call('render_template', args)).prompt).toBe('Drift v1 for x');

      door.open();
      await until(() => reg.centralConnected, 30_000);
      expect(ok(await pe.call('render_template', args))).toMatchObject({ prompt: 'Drift v2 for x', cached: false });
      // Asked once: the next use is served from memory again, without a round trip.
      const requests = reg.central!.figures.requests;
      expect(ok(await pe.call('get_template', record({ template_id: 'drifting' }))).source).toBe('memory');
      expect(reg.central!.figures.requests).toBe(requests);
      // Gone from central_cloud: gone here too (no shipped template of that name).
      expect(await pe.call('get_template', record({ template_id: 'vanishing' }))).toMatchObject({ ok: false, reason: 'not_found' });
      // The partial is asked for without a lookup of its own, and the render that included it is not served from the cache.
      await until(async () => String(ok(await pe.call('render_template', withFooter)).prompt) === 'Body. Footer v2', 10_000, 50);
      const header = ok(await pe.call('get_template', record({ template_id: 'cloud_header' })));
      expect((header.template as TermObject).template_content).toBe('Header v1');
    } finally {
      await pe.close();
      await door.stop();
      await cloud.close();
    }
  }, 60_000);
});

describe('central_cloud down or slow', () => {
  it('serves shipped templates within the timeout when central_cloud is slow', async () => {
    const url = requireEnv('TEST_NATS_URL');
    // a responder that answers after 3 s on a subject prefix of its own would be ignored; this one is on the real subjects
    const slow = await startCentralCloud(url, { delayMs: 3_000 });
    const pe = localEngine({ natsUrl: url });
    const reg = await pe.engine.service('templates');
    for (let i = 0; i < 50 && !reg.centralConnected; i++) await new Promise((r) => setTimeout(r, 50));
    expect(reg.centralConnected).toBe(true);
    const t0 = performance.now();
    const r = ok(await pe.call('get_sparc_prompt', record({ name: 'architecture', variables: record({ context: 'x', language: 'go', domain: 'billing' }) })));
    expect(performance.now() - t0).toBeLessThan(1_500); // the 500 ms timeout, not the 3 s reply
    expect(String(r.prompt)).toContain('ARCHITECTURE phase');
    expect(reg.figures.central_fallbacks).toBe(1);
    await pe.close();
    await slow.close();
  });

  it('serves shipped templates when NATS is unreachable', async () => {
    const pe = localEngine({ natsUrl: 'nats://127.0.0.1:9' });
    // The first lookup waits for the first connect at most the cold-start bound (2 s); later ones not at all.
    let t0 = performance.now();
    const r = ok(await pe.call('generate_prompt', record({ context: 'x', language: 'elixir', category: 'sparc_specification' })));
    // The bound plus a first template compile on a busy machine; a wait for NATS's own connect timeout would be seconds more.
    expect(performance.now() - t0).toBeLessThan(3_000);
    expect(r.template_used).toBe('sparc_specification');
    t0 = performance.now();
    ok(await pe.call('generate_prompt', record({ context: 'y', language: 'elixir', category: 'sparc_pseudocode' })));
    // Not the 2 s wait again.
    expect(performance.now() - t0).toBeLessThan(1_000);
    const stored = ok(await pe.call('store_template', record({ template: record({ template_name: 'offline_one', template_type: 'command', language: 'any', template_content: 'hi {{context}}' }) })));
    expect(stored.stored).toBe('local');
    await pe.close();
  });
});

/**
 * The docs' examples render as shown (strict, the default): the op table's
 * examples (docs/ops.md prints them), every `prompt-engine render` line of
 * the docs, the READMEs and the CLI's own --help examples (run through the
 * built CLI), and every Elixir `render_template(...)`/`get_sparc_prompt(...)`
 * call with literal arguments in them. An example the test cannot read is a
 * failure, so none is skipped silently.
 */
describe("the docs' render examples", () => {
  const RENDER_OPS = ['render_template', 'get_sparc_prompt', 'generate_prompt'];
  const pages = ['README.md', 'elixir_client/README.md', ...fs.readdirSync(path.join(REPO_ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`), ...fs.readdirSync(path.join(REPO_ROOT, 'src')).map((d) => `src/${d}/README.md`)].filter((p) => fs.existsSync(path.join(REPO_ROOT, p)));
  const text = (p: string): string => fs.readFileSync(path.join(REPO_ROOT, p), 'utf8');
  let pe: LocalEngine;
  beforeAll(() => {
    pe = localEngine();
  });
  afterAll(() => pe.close());

  it('every example of the render ops in the op table (docs/ops.md) renders', async () => {
    const { createOpTable } = await import('../src/ops/index.js');
    const { fromJson } = await import('../src/codec/json.js');
    let n = 0;
    for (const spec of createOpTable().specs.filter((s) => RENDER_OPS.includes(s.name))) {
      for (const ex of spec.examples ?? []) {
        const r = await pe.call(spec.name, fromJson(ex));
        expect(r, `${spec.name} ${JSON.stringify(ex)}`).toMatchObject({ ok: true });
        n++;
      }
    }
    expect(n).toBeGreaterThanOrEqual(4);
  });

  it('every `prompt-engine render` line of the docs, the READMEs and --help renders through the built CLI', async () => {
    const { spawnSync } = await import('node:child_process');
    const os = await import('node:os');
    const { VERBS } = await import('../src/cli.js');
    const lines = [
      ...pages.flatMap((p) => [...text(p).matchAll(/prompt-engine render [^\n`|]*/g)].map((m) => m[0].trim()).filter((l) => !l.includes('<'))),
      ...(VERBS.find((v) => v.name === 'render')?.examples ?? []),
    ];
    expect(lines.length).toBeGreaterThanOrEqual(2);
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-docs-render-'));
    try {
      for (const line of lines) {
        // Shell words: quotes group, and are removed.
        const words = [...line.matchAll(/(?:[^\s"']+|"[^"]*"|'[^']*')+/g)].map((m) => m[0].replace(/"([^"]*)"|'([^']*)'/g, '$1$2'));
        const r = spawnSync(process.execPath, [path.join(REPO_ROOT, 'dist', 'src', 'cli.js'), ...words.slice(1), '--json', '--data-dir', dataDir], {
          encoding: 'utf8',
          env: { ...process.env, DATABASE_URL: '', NATS_URL: '', LOG_LEVEL: '' },
        });
        expect(r.status, `${line}: ${r.stderr}`).toBe(0);
        expect((JSON.parse(r.stdout) as { prompt: string }).prompt.length, line).toBeGreaterThan(100);
      }
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }, 60_000);

  it('every Elixir render_template/get_sparc_prompt call with literal arguments in the docs and READMEs renders', async () => {
    const calls = pages.flatMap((p) => [...text(p).matchAll(/(render_template|get_sparc_prompt)\(([^)]*)\)/g)].map((m) => ({ page: p, op: m[1]!, args: m[2]! })));
    const unread: string[] = [];
    for (const c of calls) {
      // ("name", %{key: "value", "key" => "value"}[, strict: false]) — optionally after the instance.
      const m = /^(?:[A-Z][\w.]*,\s*)?"([^"]+)"\s*,\s*%\{([^}]*)\}\s*(,\s*strict:\s*false)?\s*$/.exec(c.args.trim());
      if (m === null) {
        unread.push(`${c.page}: ${c.op}(${c.args})`);
        continue;
      }
      const vars: Record<string, string> = {};
      for (const kv of m[2]!.split(',').map((x) => x.trim()).filter(Boolean)) {
        const pair = /^(?:(\w+):|"([^"]+)"\s*=>)\s*"([^"]*)"$/.exec(kv);
        if (pair === null) unread.push(`${c.page}: ${c.op}(${c.args})`);
        else vars[pair[1] ?? pair[2]!] = pair[3]!;
      }
      const args = c.op === 'render_template' ? { template_id: m[1]!, variables: vars } : { name: m[1]!, variables: vars };
      const r = await pe.call(c.op, record({ ...args, variables: record(vars), ...(m[3] !== undefined ? { strict: false } : {}) }));
      expect(r, `${c.page}: ${c.op}(${c.args})`).toMatchObject({ ok: true });
    }
    expect(unread).toEqual([]);
  });
});
