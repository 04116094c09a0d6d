/**
 * Prompt-bit operators for the offline proposer: each rewrites an
 * instruction in one well-known way (role, task decomposition, output
 * format, constraints from context, examples, tightening). They never touch
 * Handlebars expressions, so a template's variables survive every rewrite.
 */
import { TEMPLATE_EXPRESSION_RE } from './variables.js';

export interface OptimizeContext {
  language?: string;
  framework?: string;
  domain?: string;
  task?: string;
  /** Free-form context text, e.g. the project description. */
  context?: string;
  /** Example inputs/outputs to show (from templates or the devset). */
  examples?: Array<{ input: string; output: string }>;
}

export interface PromptBit {
  readonly name: string;
  /** Whether the bit would change this prompt (e.g. no second role line). */
  applies(prompt: string, ctx: OptimizeContext): boolean;
  apply(prompt: string, ctx: OptimizeContext): string;
}

const ROLE_RE = /^\s*(you are|act as|as an? )/i;
const FORMAT_RE = /\b(respond|answer|output|reply|return)\b[^.\n]*\b(format|json|list|bullet|only|single|one word|markdown)\b/i;
const STEPS_RE = /\b(step by step|steps?:|first,|1\.)/i;
const CONSTRAINT_RE = /\b(must|never|do not|don't|always|only)\b/i;
const EXAMPLE_RE = /\bexamples?:/i;

function subject(ctx: OptimizeContext): string {
  const parts = [ctx.language, ctx.framework].filter((x): x is string => Boolean(x));
  return parts.length > 0 ? parts.join('/') : '';
}

export const roleBit: PromptBit = {
  name: 'role',
  applies: (p) => !ROLE_RE.test(p),
  apply: (p, ctx) => {
    const who = ctx.domain ? `an expert in ${ctx.domain}` : subject(ctx) ? `a senior ${subject(ctx)} engineer` : 'a careful expert';
    return `You are ${who}.\n${p}`;
  },
};

export const decomposeBit: PromptBit = {
  name: 'decompose',
  applies: (p) => !STEPS_RE.test(p),
  apply: (p) => `${p}\nWork step by step: first restate the task, then reason about it, then give the answer.`,
};

export const outputFormatBit: PromptBit = {
  name: 'output_format',
  applies: (p) => !FORMAT_RE.test(p),
  apply: (p, ctx) =>
    `${p}\n${ctx.task === 'classification' || /\b(which|choose|select|options?)\b/i.test(p) ? 'Answer with the chosen option only, on its own line.' : 'Format the answer as a short list of concrete points; no preamble.'}`,
};

export const constraintsBit: PromptBit = {
  name: 'constraints',
  applies: (p, ctx) => !CONSTRAINT_RE.test(p) || Boolean(ctx.framework || ctx.language),
  apply: (p, ctx) => {
    const c: string[] = [];
    if (ctx.language) c.push(`use idiomatic ${ctx.language}`);
    if (ctx.framework) c.push(`follow ${ctx.framework} conventions`);
    c.push('do not invent facts that are not in the input');
    return `${p}\nConstraints: ${c.join('; ')}.`;
  },
};

export const examplesBit: PromptBit = {
  name: 'examples',
  applies: (p, ctx) => !EXAMPLE_RE.test(p) && (ctx.examples?.length ?? 0) > 0,
  apply: (p, ctx) => {
    const ex = (ctx.examples ?? []).slice(0, 2).map((e) => `Input: ${e.input}\nOutput: ${e.output}`);
    return `${p}\nExamples:\n${ex.join('\n\n')}`;
  },
};

export const contextBit: PromptBit = {
  name: 'context',
  applies: (p, ctx) => Boolean(ctx.context) && !p.includes(ctx.context ?? ''),
  apply: (p, ctx) => `${p}\nContext: ${ctx.context}`,
};

/** Drop filler words and repeated blank lines, outside Handlebars expressions. */
export const tightenBit: PromptBit = {
  name: 'tighten',
  applies: (p) => /\b(please|kindly|basically|really|very|just|simply)\b/i.test(p) || /\n{3,}/.test(p),
  apply: (p) =>
    splitAroundHandlebars(p)
      .map((seg) => (seg.hbs ? seg.text : seg.text.replace(/\b(please|kindly|basically|really|very|just|simply)\s+/gi, '').replace(/\n{3,}/g, '\n\n')))
      .join(''),
};

function splitAroundHandlebars(text: string): Array<{ text: string; hbs: boolean }> {
  const out: Array<{ text: string; hbs: boolean }> = [];
  let last = 0;
  for (const m of text.matchAll(TEMPLATE_EXPRESSION_RE)) {
    if (m.index! > last) out.push({ text: text.slice(last, m.index), hbs: false });
    out.push({ text: m[0], hbs: true });
    last = m.index! + m[0].length;
  }
  if (last < text.length) out.push({ text: text.slice(last), hbs: false });
  return out;
}

export const ALL_BITS: readonly PromptBit[] = [roleBit, decomposeBit, outputFormatBit, constraintsBit, examplesBit, contextBit, tightenBit];
