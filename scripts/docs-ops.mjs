// Writes docs/ops.md from the op table (run through `npm run docs:ops`, which builds first).
// test/ops.test.ts fails when the committed file differs from what this writes.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createOpTable } from '../dist/src/ops/index.js';
import { describeOps, opsMarkdown } from '../dist/src/ops/describe.js';

const out = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'docs', 'ops.md');
fs.writeFileSync(out, opsMarkdown(describeOps(createOpTable())));
process.stderr.write(`wrote ${path.relative(process.cwd(), out)}\n`);
