/** central_cloud's PromptTemplate shape, validated wherever a template enters (files, NATS, ops). */
import { Atom, isTermObject, record, type Term, type TermObject } from '../codec/terms.js';
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
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw badRequest(path, 'expected a template map');
  const o = v as Record<string, unknown>;
  const s = (k: string, required: boolean, max = 200): string | undefined => {
    const x = o[k] instanceof Atom ? (o[k] as Atom).name : o[k];
    if (x === undefined || x === null) {
      if (required) throw badRequest(`${path}.${k}`, 'is required (a string)');
      return undefined;
    }
    if (typeof x !== 'string') throw badRequest(`${path}.${k}`, 'expected a string');
    if (x.length > max) throw badRequest(`${path}.${k}`, `expected at most ${max} characters`);
    return x;
  };
  const name = s('template_name', true)!;
  if (!NAME_RE.test(name)) throw badRequest(`${path}.template_name`, 'expected letters, digits, _ . : - (1..200)');
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
  const created = o.created_at === undefined || o.created_at === null ? undefined : String(o.created_at);
  if (created !== undefined) t.created_at = created;
  return t;
}

export function templateRecord(t: Template): TermObject {
  return record({ ...t } as Record<string, Term | undefined>);
}

export function isTemplateTerm(v: Term | undefined): v is TermObject {
  return isTermObject(v);
}
