/** central_cloud's PromptTemplate shape, validated wherever a template enters (files, NATS, ops). */
import { isTermObject, record, type Term, type TermObject } from '../codec/terms.js';
import { asString } from '../contract/args.js';
import { badRequest } from '../contract/errors.js';

export interface Template {
  template_name: string;
  template_content: string;
  template_type: string;
  language: string;
  id?: string;
  package_id?: string;
  created_at?: string;
}

const NAME_RE = /^[A-Za-z0-9_.:-]{1,200}$/;

/** Parse a template from JSON or a term; throws OpError(bad_request) naming the field. */
export function parseTemplate(v: unknown, path: string): Template {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw badRequest(path === '' ? 'args' : path, 'expected a template map');
  const o = v as Record<string, unknown>;
  /** The field's name in errors: `template.template_name`, or `template_name` at the top level (path ''). */
  const at = (k: string): string => (path === '' ? k : `${path}.${k}`);
  const s = (k: string, required: boolean, max = 200): string | undefined => {
    const x = o[k] as Term | undefined;
    if (x === undefined || x === null) {
      if (required) throw badRequest(at(k), 'is required (a string)');
      return undefined;
    }
    return asString(x, at(k), { max });
  };
  const name = s('template_name', true)!;
  if (!NAME_RE.test(name)) throw badRequest(at('template_name'), 'expected letters, digits, _ . : - (1..200)');
  const t: Template = {
    template_name: name,
    template_content: s('template_content', true, 1_000_000)!,
    template_type: s('template_type', true)!,
    language: s('language', false) ?? 'any',
  };
  const id = s('id', false);
  if (id !== undefined) t.id = id;
  const pkg = s('package_id', false);
  if (pkg !== undefined) t.package_id = pkg;
  const created = s('created_at', false, 100);
  if (created !== undefined) t.created_at = created;
  return t;
}

export function templateRecord(t: Template): TermObject {
  return record({ ...t } as Record<string, Term | undefined>);
}

export function isTemplateTerm(v: Term | undefined): v is TermObject {
  return isTermObject(v);
}
