/**
 * The templates part, rendering: Handlebars in an isolated environment.
 * Prompts are text, so nothing is HTML-escaped. Templates are compiled once
 * and cached by content. Template content can never run code or reach a
 * prototype: only the built-in block helpers plus `join`/`default` exist
 * (no `log`), prototype property and method access stay disabled, and the
 * data handed to a template is copied onto null-prototype objects.
 *
 * Strict mode (the ops' default) fails naming every variable that is
 * missing and every one given that the template does not declare (a typo):
 * the required variables are the ones a template (or a partial it includes)
 * uses outside any block, the declared ones those it uses anywhere, both
 * found by walking the AST, so the error lists all of them at once rather
 * than the first one Handlebars trips over.
 *
 * A template and its variables are client data, so one render's work and
 * output are bounded (RENDER_LIMITS): every block entered (an `each`
 * iteration, an `if`/`unless`/`with` body, a partial) is counted and every
 * block's output measured, and a render past either limit stops with
 * TemplateLimitError instead of holding the event loop (nested `each` over
 * `@root`, or partials that include each other twice, grow without bound).
 */
import Handlebars from 'handlebars';
import { isMapPrototype } from '../codec/terms.js';

export type Vars = Record<string, unknown>;

/** Strict rendering found variables missing, or given and not declared by the template. */
export class TemplateVariablesError extends Error {
  constructor(
    readonly missing: readonly string[],
    readonly unknown: readonly string[],
    /** Every variable the template (with its partials) declares, sorted. */
    readonly declared: readonly string[],
  ) {
    super([missing.length > 0 ? `missing variables: ${missing.join(', ')}` : '', unknown.length > 0 ? `unknown variables: ${unknown.join(', ')}` : ''].filter(Boolean).join('; '));
    this.name = 'TemplateVariablesError';
  }
}

export class TemplateSyntaxError extends Error {}

/** What one render may do: blocks entered (an `each` iteration, an `if`/`unless`/`with` body, a partial of any kind), characters produced. */
export const RENDER_LIMITS = { blocks: 100_000, chars: 4_000_000 } as const;

/** Compiled templates kept for reuse (then the cache starts afresh): as many sources, as many characters of them. */
export const COMPILED_LIMITS = { templates: 5_000, chars: 64 * 2 ** 20 } as const;

/** A render went past RENDER_LIMITS and was stopped. */
export class TemplateLimitError extends Error {}

type HbsNode = { type: string; [k: string]: unknown };

export class TemplateRenderer {
  private readonly hbs = Handlebars.create();
  private readonly compiled = new Map<string, HandlebarsTemplateDelegate>();
  /** Characters of the sources `compiled` holds. */
  private compiledChars = 0;
  /** Each source's own partial names (partialNamesIn), kept within COMPILED_LIMITS as `compiled` is, and cleared with it. */
  private readonly partialNames = new Map<string, string[]>();
  /** Characters of the sources `partialNames` is keyed by. */
  private partialNamesChars = 0;
  private readonly partials = new Map<string, string>();

  /** Blocks entered by the render under way (renders are synchronous: one at a time). */
  private blocks = 0;

  constructor() {
    this.hbs.unregisterHelper('log');
    // Every partial the render enters, however it came (registered, `{{#*inline}}`, `{{> @partial-block}}`),
    // counted and measured as a block: this environment's own VM, its invokePartial wrapped. An inline
    // partial calling another twice, forty deep, was 2^40 calls nothing counted.
    const vm = (this.hbs as unknown as { VM: { invokePartial: (this: unknown, ...a: unknown[]) => unknown } }).VM;
    const invoke = vm.invokePartial;
    const counted = this.counted;
    (this.hbs as unknown as { VM: unknown }).VM = {
      ...vm,
      invokePartial(this: unknown, ...args: unknown[]): unknown {
        return counted((...a: unknown[]) => invoke.apply(this, a))(...args);
      },
    };
    // The built-in block helpers, each block they render counted and measured.
    for (const name of ['each', 'if', 'unless', 'with']) {
      const builtin = this.hbs.helpers[name] as (this: unknown, ...a: unknown[]) => unknown;
      const counted = this.counted;
      this.hbs.registerHelper(name, function (this: unknown, ...args: unknown[]) {
        const options = args[args.length - 1] as Handlebars.HelperOptions;
        args[args.length - 1] = { ...options, fn: counted(options.fn), inverse: counted(options.inverse) };
        return builtin.apply(this, args);
      });
    }
    this.hbs.registerHelper('join', (list: unknown, sep: unknown) => (Array.isArray(list) ? list.map(String).join(typeof sep === 'string' ? sep : ', ') : ''));
    this.hbs.registerHelper('default', (v: unknown, fallback: unknown) => (v === undefined || v === null || v === '' ? fallback : v));
  }

  /** Register (or replace) a partial usable as `{{> name}}`; each inclusion counted and measured as a block (the VM's invokePartial). */
  setPartial(name: string, content: string): void {
    const template = this.compile(content);
    this.partials.set(name, content);
    this.hbs.registerPartial(name, ((context: unknown, options?: Handlebars.RuntimeOptions) => template(context, options)) as unknown as Handlebars.Template);
  }

  /** Forget a partial: `{{> name}}` fails to render again, as for a name never registered. */
  removePartial(name: string): void {
    this.partials.delete(name);
    this.hbs.unregisterPartial(name);
  }

  /** `f` (a block's or a partial's renderer) counted against RENDER_LIMITS.blocks, its output against RENDER_LIMITS.chars. */
  private readonly counted = <F>(f: F): F => {
    if (typeof f !== 'function') return f;
    const block = (...args: unknown[]): unknown => {
      if (++this.blocks > RENDER_LIMITS.blocks) throw new TemplateLimitError(`rendering stopped: more than ${RENDER_LIMITS.blocks.toLocaleString('en-US')} blocks (each iterations, if/unless/with bodies, partials) in one render`);
      const out = (f as (...a: unknown[]) => unknown)(...args);
      if (typeof out === 'string' && out.length > RENDER_LIMITS.chars) throw new TemplateLimitError(`rendering stopped: a block's output passed ${RENDER_LIMITS.chars.toLocaleString('en-US')} characters`);
      return out;
    };
    // Handlebars reads properties of a block's function (its program, depth, block params).
    return Object.assign(block, f) as F;
  };

  hasPartial(name: string): boolean {
    return this.partials.has(name);
  }

  /** Throws TemplateSyntaxError when the content does not parse. */
  check(content: string): void {
    this.compile(content);
  }

  /**
   * `strict`: refuse missing and undeclared variables (TemplateVariablesError).
   * `implicit`: names the caller adds itself, never reported as undeclared.
   */
  render(content: string, vars: Vars, opts: { strict?: boolean; implicit?: readonly string[] } = {}): string {
    const data = toSafeData(vars) as Vars;
    if (opts.strict) {
      const missing = this.requiredVariables(content).filter((v) => isMissing(data, v));
      const declared = this.declaredVariables(content);
      const known = new Set([...declared, ...(opts.implicit ?? [])]);
      const unknown = Object.keys(data).filter((k) => !known.has(k));
      if (missing.length > 0 || unknown.length > 0) throw new TemplateVariablesError(missing, unknown, [...declared].sort());
    }
    this.blocks = 0;
    let out: string;
    try {
      out = this.compile(content)(data, {
        allowProtoPropertiesByDefault: false,
        allowProtoMethodsByDefault: false,
        allowCallsToHelperMissing: false,
      });
    } catch (err) {
      if (err instanceof TemplateVariablesError || err instanceof TemplateLimitError) throw err;
      throw new TemplateSyntaxError((err as Error).message);
    }
    if (out.length > RENDER_LIMITS.chars) throw new TemplateLimitError(`rendering stopped: the prompt passed ${RENDER_LIMITS.chars.toLocaleString('en-US')} characters`);
    return out;
  }

  /** Every variable a template refers to anywhere (for candidates that must keep them). */
  variablesOf(content: string): string[] {
    const out = new Set<string>();
    // A partial's name in `{{> name}}` is no variable; the same name used as {{name}} elsewhere is one.
    const partialNames = new Set<unknown>();
    walk(this.parse(content), (n) => {
      if (n.type === 'PartialStatement' || n.type === 'PartialBlockStatement') partialNames.add(n.name);
      else if (n.type === 'PathExpression' && !partialNames.has(n) && !(n.data as boolean) && (n.depth as number) === 0) {
        const head = (n.parts as string[])[0];
        if (head !== undefined && !BUILTINS.has(head)) out.add(head);
      }
    });
    return [...out];
  }

  /**
   * Every partial a template includes, and those they include in turn (as
   * registered now): a render depends on each, so a change to any of them
   * must drop what was rendered before. A partial named by an expression
   * (`{{> (lookup ...)}}`) is known only at render time and is not listed.
   */
  partialsIncluded(content: string, seen = new Set<string>()): Set<string> {
    for (const name of this.partialNamesIn(content)) {
      if (seen.has(name)) continue;
      seen.add(name);
      const partial = this.partials.get(name);
      if (partial !== undefined) this.partialsIncluded(partial, seen);
    }
    return seen;
  }

  /** The partials a source names itself, parsed once per source (asked at every render the prompt cache misses). */
  private partialNamesIn(content: string): string[] {
    let names = this.partialNames.get(content);
    if (names === undefined) {
      const found: string[] = [];
      walk(this.parse(content), (n) => {
        if (n.type !== 'PartialStatement' && n.type !== 'PartialBlockStatement') return;
        const name = (n.name as HbsNode).original;
        if (typeof name === 'string') found.push(name);
      });
      // Keyed by the source: bounded by characters as well as by count, as `compiled` is.
      if (this.partialNames.size >= COMPILED_LIMITS.templates || this.partialNamesChars + content.length > COMPILED_LIMITS.chars) this.forgetPartialNames();
      this.partialNames.set(content, (names = found));
      this.partialNamesChars += content.length;
    }
    return names;
  }

  private forgetPartialNames(): void {
    this.partialNames.clear();
    this.partialNamesChars = 0;
  }

  /** Every variable a template declares: the ones it uses anywhere, and those of the partials it includes (helpers excluded). */
  declaredVariables(content: string, seen = new Set<string>()): Set<string> {
    const out = new Set(this.variablesOf(content).filter((v) => !this.hbs.helpers[v]));
    walk(this.parse(content), (n) => {
      if (n.type !== 'PartialStatement' && n.type !== 'PartialBlockStatement') return;
      const name = (n.name as HbsNode).original as string;
      const partial = this.partials.get(name);
      if (partial === undefined || seen.has(name)) return;
      seen.add(name);
      for (const v of this.declaredVariables(partial, seen)) out.add(v);
    });
    return out;
  }

  /** Variables used outside any block, in this template and the partials it includes (top level). */
  requiredVariables(content: string, seen = new Set<string>()): string[] {
    const out = new Set<string>();
    for (const stmt of (this.parse(content).body as HbsNode[]) ?? []) {
      if (stmt.type === 'MustacheStatement') {
        const path = stmt.path as HbsNode;
        const params = (stmt.params as HbsNode[]) ?? [];
        if (path.type === 'PathExpression' && params.length === 0 && !(path.data as boolean)) {
          const head = (path.parts as string[])[0];
          if (head !== undefined && !BUILTINS.has(head) && !this.hbs.helpers[head]) out.add((path.original as string) ?? head);
        }
      } else if (stmt.type === 'PartialStatement') {
        const name = (stmt.name as HbsNode).original as string;
        const partial = this.partials.get(name);
        if (partial !== undefined && !seen.has(name)) {
          seen.add(name);
          for (const v of this.requiredVariables(partial, seen)) out.add(v);
        }
      }
    }
    return [...out];
  }

  private parse(content: string): HbsNode {
    try {
      return this.hbs.parse(content) as unknown as HbsNode;
    } catch (err) {
      throw new TemplateSyntaxError((err as Error).message);
    }
  }

  private compile(content: string): HandlebarsTemplateDelegate {
    let t = this.compiled.get(content);
    if (t === undefined) {
      this.parse(content); // syntax errors surface here, typed
      t = this.hbs.compile(content, { noEscape: true, strict: false, knownHelpersOnly: false });
      // Each compiled template keeps its source: bounded by characters as well as by count (5,000 of 1,000,000 characters was 5 GB).
      if (this.compiled.size >= COMPILED_LIMITS.templates || this.compiledChars + content.length > COMPILED_LIMITS.chars) {
        this.compiled.clear();
        this.forgetPartialNames();
        this.compiledChars = 0;
      }
      this.compiled.set(content, t);
      this.compiledChars += content.length;
    }
    return t;
  }
}

const BUILTINS = new Set(['this', 'if', 'unless', 'each', 'with', 'lookup', 'else']);

function walk(node: unknown, visit: (n: HbsNode) => void): void {
  if (node === null || typeof node !== 'object') return;
  if (Array.isArray(node)) {
    for (const x of node) walk(x, visit);
    return;
  }
  const n = node as HbsNode;
  if (typeof n.type === 'string') visit(n);
  for (const k of Object.keys(n)) if (k !== 'loc') walk(n[k], visit);
}

function isMissing(data: Vars, path: string): boolean {
  let cur: unknown = data;
  for (const part of path.split('.')) {
    if (cur === null || typeof cur !== 'object' || !Object.prototype.hasOwnProperty.call(cur, part)) return true;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur === undefined || cur === null || cur === '';
}

/** Deep copy onto null-prototype objects: a template can reach data, never a prototype. */
function toSafeData(v: unknown, depth = 0): unknown {
  if (depth > 20) return undefined;
  if (Array.isArray(v)) return v.map((x) => toSafeData(x, depth + 1));
  if (v !== null && typeof v === 'object' && !Buffer.isBuffer(v)) {
    const proto = Object.getPrototypeOf(v) as unknown;
    if (!isMapPrototype(proto)) {
      // ErlFloat, Atom and other term classes render as their value.
      const prim = (v as { valueOf(): unknown }).valueOf();
      if (prim !== v) return prim;
      return String(v);
    }
    const out = Object.create(null) as Record<string, unknown>;
    for (const k of Object.keys(v)) out[k] = toSafeData((v as Record<string, unknown>)[k], depth + 1);
    return out;
  }
  return v;
}
