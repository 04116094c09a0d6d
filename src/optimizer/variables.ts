/**
 * Template variables of a prompt text, in both forms prompts use:
 * Handlebars `{{name}}` (also `{{{name}}}`, `{{name.path}}`, helpers and
 * blocks) and single-brace `{name}` (Python-style format strings, as in many
 * evaluation prompts), and the one check every proposer's candidates pass
 * (`variablesKept`), with the rule said at the call:
 *  - `same`: exactly the base's variables, none added, dropped or renamed
 *    (the closed loop: the app fills in what its base had, nothing else);
 *  - `kept`: every expression of the base still there at least as often,
 *    more may be added (COPRO: the caller renders the optimized template
 *    with its own data, which may hold more).
 */

const HANDLEBARS_RE = /\{\{\{?\s*([#/^]?[A-Za-z_][\w.-]*)[^}]*\}?\}\}/g;
const SINGLE_RE = /(?<!\{)\{\s*([A-Za-z_][\w.-]*)\s*\}(?!\})/g;

/** The variable names of a text, as a sorted multiset key (`a,b,b`). */
export function templateVariables(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(HANDLEBARS_RE)) out.push(`{{${m[1]!}}}`);
  const stripped = text.replace(HANDLEBARS_RE, ' ');
  for (const m of stripped.matchAll(SINGLE_RE)) out.push(`{${m[1]!}}`);
  return out.sort();
}

/** A Handlebars expression or a single-brace `{name}` placeholder, whole (global: use with matchAll or match). */
export const TEMPLATE_EXPRESSION_RE = /\{\{[\s\S]*?\}\}|\{[A-Za-z_]\w*\}/g;

/** The expressions of a template, whole and in order (`{{language}}`, `{{#if x}}`, `{sentence}`). */
export function templateExpressions(text: string): string[] {
  return text.match(TEMPLATE_EXPRESSION_RE) ?? [];
}

export type VariableRule = 'same' | 'kept';

/** Whether `candidate` keeps the variables of `base` by `rule` (see the module header). */
export function variablesKept(base: string, candidate: string, rule: VariableRule): boolean {
  if (rule === 'same') {
    const a = [...new Set(templateVariables(base))];
    const b = [...new Set(templateVariables(candidate))];
    return a.length === b.length && a.every((x, i) => x === b[i]);
  }
  const count = (xs: string[]): Map<string, number> => xs.reduce((m, x) => m.set(x, (m.get(x) ?? 0) + 1), new Map<string, number>());
  const have = count(templateExpressions(candidate));
  for (const [expr, n] of count(templateExpressions(base))) if ((have.get(expr) ?? 0) < n) return false;
  return true;
}
