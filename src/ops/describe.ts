/**
 * The op table described as data: what `describe` answers, what
 * `prompt-engine ops` prints, and what docs/ops.md is generated from
 * (`npm run docs:ops`; test/ops.test.ts fails when the file differs), so
 * the reference cannot drift from the code that serves it.
 */
import { fromJson, type Json } from '../codec/json.js';
import { record, type Term, type TermObject } from '../codec/terms.js';
import { COMMON_ERRORS, type ErrorReason } from '../contract/errors.js';
import type { ArgSchema } from '../contract/schema.js';
import type { OpTable } from './registry.js';

export interface ArgDescription {
  name: string;
  type: string;
  required: boolean;
  required_when?: string;
  default?: Json;
  alias_of?: string;
  doc: string;
  keys?: ArgDescription[];
}

export interface ErrorDescription {
  reason: ErrorReason;
  when: string;
}

export interface OpDescription {
  name: string;
  summary: string;
  args: ArgDescription[];
  open_args: boolean;
  reply: string;
  errors: ErrorDescription[];
  examples: Json[];
}

export interface OpsDescription {
  ops: OpDescription[];
  common_errors: ErrorDescription[];
}

function argsOf(schema: ArgSchema): ArgDescription[] {
  // Required first, then by name: the order a reader wants.
  return Object.keys(schema)
    .sort((a, b) => Number(schema[b]!.required === true) - Number(schema[a]!.required === true) || a.localeCompare(b))
    .map((name) => {
      const s = schema[name]!;
      const d: ArgDescription = { name, type: s.type, required: s.required === true, doc: s.doc };
      if (s.requiredWhen !== undefined) d.required_when = s.requiredWhen;
      if (s.default !== undefined) d.default = s.default;
      if (s.aliasOf !== undefined) d.alias_of = s.aliasOf;
      if (s.keys !== undefined) d.keys = argsOf(s.keys);
      return d;
    });
}

const errorsOf = (e: Readonly<Partial<Record<ErrorReason, string>>>): ErrorDescription[] =>
  (Object.keys(e) as ErrorReason[]).map((reason) => ({ reason, when: e[reason]! }));

export function describeOps(table: OpTable): OpsDescription {
  return {
    ops: table.specs.map((s) => ({
      name: s.name,
      summary: s.summary,
      args: argsOf(s.args),
      open_args: s.openArgs === true,
      reply: s.reply,
      errors: errorsOf(s.errors ?? {}),
      examples: [...(s.examples ?? [])],
    })),
    common_errors: errorsOf(COMMON_ERRORS),
  };
}

function argTerm(a: ArgDescription): TermObject {
  return record({
    name: a.name,
    type: a.type,
    required: a.required,
    required_when: a.required_when ?? null,
    default: a.default === undefined ? null : fromJson(a.default),
    alias_of: a.alias_of ?? null,
    doc: a.doc,
    keys: a.keys === undefined ? null : a.keys.map(argTerm),
  });
}

export function opDescriptionTerm(d: OpDescription): TermObject {
  return record({
    name: d.name,
    summary: d.summary,
    args: d.args.map(argTerm),
    open_args: d.open_args,
    reply: d.reply,
    errors: d.errors.map((e): Term => record({ ...e })),
    examples: d.examples.map(fromJson),
  });
}

// ------------------------------------------------------------------ markdown

const cell = (s: string): string => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
const code = (s: string): string => (s.includes('`') ? `\`\` ${s} \`\`` : `\`${s}\``);

function argRows(args: ArgDescription[], prefix = ''): string[] {
  return args.flatMap((a) => {
    const req = a.required ? 'yes' : a.required_when !== undefined ? a.required_when : 'no';
    const dflt = a.default === undefined ? '' : code(JSON.stringify(a.default));
    const doc = a.alias_of !== undefined ? `alias of \`${a.alias_of}\`. ${a.doc}` : a.doc;
    const row = `| \`${prefix}${a.name}\` | ${cell(a.type)} | ${cell(req)} | ${cell(dflt)} | ${cell(doc)} |`;
    return [row, ...(a.keys === undefined ? [] : argRows(a.keys, `${prefix}${a.name}.`))];
  });
}

/** docs/ops.md, byte for byte. */
export function opsMarkdown(d: OpsDescription): string {
  const out: string[] = [
    '# Ops',
    '',
    '<!-- Generated from the op table by `npm run docs:ops` (src/ops/describe.ts). Do not edit: test/ops.test.ts fails when this file differs from what the table generates. -->',
    '',
    'Every op the sidecar serves, on the Port (`{:req, id, op, args}`), on NATS (`prompt_engine.<op>`), and in',
    'the CLI (`prompt-engine call <op> \'<json>\'`). The same data is the reply of the `describe` op and the',
    'output of `prompt-engine ops`. Arguments are a map with atom or binary keys; a key an op does not',
    'take is refused with `{:error, {:bad_request, "<key>: unknown argument of <op> (did you mean ...?); known: ..."}}`.',
    'Types are written as the Elixir caller sends them; an enum value may be an atom or a string.',
    '',
    '## Errors every op may return',
    '',
    '| reason | when |',
    '|---|---|',
    ...d.common_errors.map((e) => `| \`${e.reason}\` | ${cell(e.when)} |`),
    '',
    '## Index',
    '',
    ...d.ops.map((o) => `* [\`${o.name}\`](#${o.name}) — ${o.summary}`),
    '',
  ];
  for (const o of d.ops) {
    out.push(`## ${o.name}`, '', o.summary, '');
    if (o.args.length === 0) out.push('Arguments: none (an empty map).', '');
    else out.push('| argument | type | required | default | meaning |', '|---|---|---|---|---|', ...argRows(o.args), '');
    if (o.open_args) out.push('Any other key is accepted too.', '');
    out.push(`Reply: ${code(o.reply)}`, '');
    if (o.errors.length > 0) out.push('Errors of this op:', '', ...o.errors.map((e) => `* \`${e.reason}\`: ${e.when}`), '');
    if (o.examples.length > 0) out.push('Example arguments (JSON):', '', '```json', ...o.examples.map((x) => JSON.stringify(x)), '```', '');
  }
  return out.join('\n');
}
