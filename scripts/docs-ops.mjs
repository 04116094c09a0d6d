// Writes docs/ops.md from the op table (run through `npm run docs:ops`, which builds first),
// and the Elixir client's atoms.ex from the same table (scripts/elixir-atoms.mjs).
// test/ops.test.ts fails when the committed docs/ops.md differs from what this writes,
// elixir_client/test/atoms_test.exs when atoms.ex does.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createOpTable } from '../dist/src/ops/index.js';
import { describeOps, opsMarkdown } from '../dist/src/ops/describe.js';
import { ATOMS_EX, elixirAtomsSource } from './elixir-atoms.mjs';

const out = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'docs', 'ops.md');
fs.writeFileSync(out, opsMarkdown(describeOps(createOpTable())));
process.stderr.write(`wrote ${path.relative(process.cwd(), out)}\n`);
fs.writeFileSync(ATOMS_EX, elixirAtomsSource());
process.stderr.write(`wrote ${path.relative(process.cwd(), ATOMS_EX)}\n`);
