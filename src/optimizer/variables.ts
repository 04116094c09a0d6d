/**
 * Template variables of a prompt text, in both forms prompts use:
 * Handlebars `{{name}}` (also `{{{name}}}`, `{{name.path}}`) and single-brace
 * `{name}` (Python-style format strings, as in many evaluation prompts).
 * A proposal that drops, adds or renames one would break the app that
 * fills it in, so the closed loop never tries such a proposal.
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

/** True when `candidate` uses exactly the variables of `base` (names, forms and counts of distinct names). */
export function sameVariables(base: string, candidate: string): boolean {
  const a = [...new Set(templateVariables(base))];
  const b = [...new Set(templateVariables(candidate))];
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
