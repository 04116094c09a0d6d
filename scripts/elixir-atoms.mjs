// Writes elixir_client/lib/prompt_engine/atoms.ex from the op table: every atom the sidecar
// may send (frames, events, error reasons, op names, argument names, the keys and atoms of
// each op's reply) and every op's argument names, which the client checks options against.
// Run by `npm run docs:ops` (scripts/docs-ops.mjs); `node scripts/elixir-atoms.mjs --print`
// prints the file, which elixir_client/test/atoms_test.exs compares with the committed one.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createOpTable } from '../dist/src/ops/index.js';
import { describeOps } from '../dist/src/ops/describe.js';
import { ERROR_REASONS } from '../dist/src/contract/errors.js';
import { OBJECTIVE_KINDS } from '../dist/src/store/experimentRecords.js';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
export const ATOMS_EX = path.join(ROOT, 'elixir_client', 'lib', 'prompt_engine', 'atoms.ex');

// The Port protocol's own atoms (docs/protocol.md) and the engine's event names.
const FRAME = ['req', 'cancel', 'reply', 'event', 'ok', 'error', 'ready', 'protocol_error', 'nil', 'true', 'false'];
const EVENTS = ['template_updated', 'model_trained', 'model_promoted'];
// Reply keys and values the op table does not spell out yet: the figures of `stats`
// (`services: %{service => figures}`), the rows of `query` (their columns), the variant
// states of `experiment`, the handshake. Move each into its op's reply text when it is described there.
const UNDESCRIBED = [
  // handshake, health, stats
  'max_frame_bytes', 'message', 'rss', 'heap_used', 'external', 'port', 'frames_in', 'frames_out', 'protocol_errors',
  'cancels', 'pending_input_bytes', 'pending_output_bytes', 'output_paused', 'checks', 'database', 'nats', 'detail',
  // cache and templates figures
  'cache', 'total_entries', 'dropped', 'lookups', 'memory_hits', 'central_hits', 'shipped_hits', 'central_fallbacks', 'central_wrong_names', 'central_revalidations',
  'requests', 'failures', 'analytics_sent', 'analytics_dropped', 'updates', 'central_connected', 'templates',
  // store figures and rows
  'backend', 'db_up', 'batches', 'mean_batch', 'journaled', 'replayed', 'path', 'journal_depth', 'overlap', 'kind',
  'rows', 'count', 'success_rate',
  // the embedding service's figures
  'computed', 'store_hits', 'store_errors', 'worker_starts', 'entries',
  // learning figures
  'samples', 'examples', 'training', 'trained', 'promoted', 'p', 'regret', 'feature_spec_hash', 'trainings', 'promotions',
  'last_error', 'insufficient', 'continuous', 'busy',
  // the store writer's and the closed loop's figures
  'write_errors', 'unmatched_outcomes', 'proposals_screened', 'proposals_rejected', 'leader_changes', 'choices', 'refused',
  'duplicate_outcomes', 'caught_up', 'journaled_outcomes', 'leases_taken', 'leases_lost', 'admitted', 'notices', 'refreshes',
  'full_refreshes', 'heartbeats_missed', 'deciding', 'evicted', 'lag_ms', 'near_duplicates',
  // NATS peer mode's figures (a sidecar serving NATS and the Port)
  'connected', 'serving', 'jetstream', 'overloaded', 'expired', 'expired_running', 'disconnects', 'reconnects', 'published', 'duplicates',
  'written', 'redelivered', 'terminated', 'retried',
  // the dashboard's figures (a sidecar serving the page)
  'url', 'streams', 'pages_watched', 'actions_enabled', 'json', 'actions', 'streams_opened', 'streams_dropped',
  // render errors
  'missing',
  // the closed loop's states and figures
  'running', 'stopped', 'active', 'retired', 'banned', 'base', 'offline', 'llm', 'experiments', 'proposals_made',
  'previous_version', 'promoted_by',
];

const IDENT = /[a-z_][a-z0-9_]*/g;

/** Identifiers that are keys or atoms in a reply description: inside `%{...}` and `[...]`, and `:atom` literals. */
function replyAtoms(reply) {
  const out = new Set();
  for (const m of reply.matchAll(/:([a-z_][a-z0-9_]*)/g)) out.add(m[1]);
  let depth = 0;
  let inString = false;
  let segment = '';
  for (const ch of reply) {
    if (ch === '"') inString = !inString;
    if (inString) continue;
    if (ch === '{' || ch === '[') depth++;
    else if (ch === '}' || ch === ']') depth = Math.max(0, depth - 1);
    else if (depth > 0) segment += ch;
    if (depth === 0) segment += ' ';
  }
  // keys are followed by `:` or `,` or the end of a map; type words (float, binary, ...) follow a `:`
  for (const m of segment.matchAll(/([a-z_][a-z0-9_]*)\s*(?=[:,}\]]|$|\s*\|)/g)) out.add(m[1]);
  return out;
}

function argNames(args) {
  return args.flatMap((a) => [a.name, ...(a.keys === undefined ? [] : argNames(a.keys))]);
}

// Type names and placeholders of the reply texts, not atoms.
const TYPE_WORDS = new Set(['float', 'binary', 'boolean', 'integer', 'term', 'map', 'op', 'service', 'figures']);

export function elixirAtomsSource(d = describeOps(createOpTable()), reasons = ERROR_REASONS) {
  // An objective's kind is an atom in every reply that carries the objective.
  const atoms = new Set([...FRAME, ...EVENTS, ...reasons, ...UNDESCRIBED, ...OBJECTIVE_KINDS]);
  for (const o of d.ops) {
    atoms.add(o.name);
    for (const n of argNames(o.args)) atoms.add(n);
    for (const a of replyAtoms(o.reply)) if (!TYPE_WORDS.has(a)) atoms.add(a);
  }
  for (const e of d.common_errors) atoms.add(e.reason);
  const sorted = [...atoms].filter((a) => /^[a-z][a-z0-9_]*$/.test(a)).sort();
  const words = (list, indent) => {
    const lines = [];
    let line = '';
    for (const w of list) {
      if (line.length + w.length + 1 > 96) {
        lines.push(line);
        line = '';
      }
      line += (line === '' ? '' : ' ') + w;
    }
    if (line !== '') lines.push(line);
    return lines.map((l) => indent + l).join('\n');
  };
  const argsMap = d.ops
    .map((o) => {
      const nested = o.args.filter((a) => a.keys !== undefined).map((a) => `${a.name}: ~w(${a.keys.map((k) => k.name).sort().join(' ')})a`);
      return `    ${o.name}: {~w(${o.args.map((a) => a.name).sort().join(' ')})a, ${o.open_args}, [${nested.join(', ')}]}`;
    })
    .join(',\n');
  return `# Generated by \`npm run docs:ops\` (scripts/elixir-atoms.mjs) from the sidecar's op table.
# Do not edit: elixir_client/test/atoms_test.exs fails when this file differs from what the script writes.
defmodule PromptEngine.Atoms do
  @moduledoc false
  # Replies are decoded with \`:erlang.binary_to_term(bin, [:safe])\`, which refuses atoms the
  # VM does not know. Every atom the sidecar may send is listed here, and
  # \`PromptEngine.Connection\` loads this module before the first frame arrives. An atom
  # missing from this list does not leave a caller waiting: \`PromptEngine.Term\` decodes the
  # frame with that atom as a string and the connection logs it once.

  @atoms ~w(
${words(sorted, '    ')}
  )a

  # op => {argument names, whether other keys are accepted, argument => its map's keys}
  @args %{
${argsMap}
  }

  @doc false
  def known, do: @atoms

  @doc false
  # The op's argument names, whether it takes any other key, and the keys of its map arguments; nil for an op not in the table.
  def args(op), do: Map.get(@args, op)

  @doc false
  def ops, do: Map.keys(@args)
end
`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  if (process.argv.includes('--print')) process.stdout.write(elixirAtomsSource());
  else {
    fs.writeFileSync(ATOMS_EX, elixirAtomsSource());
    process.stderr.write(`wrote ${path.relative(process.cwd(), ATOMS_EX)}\n`);
  }
}
