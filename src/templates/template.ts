/** central_cloud's PromptTemplate shape, validated wherever a template enters (files, NATS, ops). */
import { isTermObject, record, type Term, type TermObject } from '../codec/terms.js';
import { badRequest } from '../contract/errors.js';
import { readArgs, string, type ArgSchema } from '../contract/schema.js';

export interface Template {
  template_name: string;
  template_content: string;
  template_type: string;
  language: string;
  id?: string;
  package_id?: string;
  created_at?: string;
}

/** The longest template name (an op's `template_id` is one). */
export const TEMPLATE_NAME_MAX = 200;

/** The fields of a template (central_cloud's PromptTemplate shape): read by these specs wherever a template enters, and documented by them (store_template). */
export const TEMPLATE_FIELDS = {
  template_name: string({ min: 1, max: TEMPLATE_NAME_MAX, pattern: { re: /^[A-Za-z0-9_.:-]+$/, says: 'letters, digits, _ . : -' }, required: true, doc: "the template's name (its id for get_template)" }),
  template_content: string({ max: 1_000_000, required: true, doc: 'the template text (Handlebars); must compile' }),
  template_type: string({ max: 200, required: true, doc: 'e.g. sparc, command, analysis' }),
  language: string({ max: 200, default: 'any', doc: 'the language it is for' }),
  id: string({ max: 200, doc: "central_cloud's id" }),
  package_id: string({ max: 200, doc: "central_cloud's package" }),
  created_at: string({ max: 100, doc: 'when it was made' }),
} satisfies ArgSchema;

/** Parse a template from JSON or a term; throws OpError(bad_request) naming the field (`template.template_name`, or `template_name` at the top level: path ''). */
export function parseTemplate(v: unknown, path: string): Template {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw badRequest(path === '' ? 'args' : path, 'expected a template map');
  const f = readArgs(v as TermObject, TEMPLATE_FIELDS, path === '' ? '' : `${path}.`);
  const t: Template = { template_name: f.template_name, template_content: f.template_content, template_type: f.template_type, language: f.language };
  if (f.id !== undefined) t.id = f.id;
  if (f.package_id !== undefined) t.package_id = f.package_id;
  if (f.created_at !== undefined) t.created_at = f.created_at;
  return t;
}

export function templateRecord(t: Template): TermObject {
  return record({ ...t } as Record<string, Term | undefined>);
}

export function isTemplateTerm(v: Term | undefined): v is TermObject {
  return isTermObject(v);
}
