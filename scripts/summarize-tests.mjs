// Prints one closing line over every suite of `npm test`: "total: N passed, N failed, N skipped".
import fs from 'node:fs';
import path from 'node:path';

const dir = process.argv[2];
let passed = 0, failed = 0, skipped = 0;
const parts = [];
try {
  const v = JSON.parse(fs.readFileSync(path.join(dir, 'vitest.json'), 'utf8'));
  passed += v.numPassedTests; failed += v.numFailedTests; skipped += v.numPendingTests + (v.numTodoTests ?? 0);
  if (v.numFailedTestSuites) failed += v.testResults.filter((r) => r.status === 'failed' && r.assertionResults.length === 0).length;
  parts.push(`vitest ${v.numPassedTests}/${v.numTotalTests}`);
} catch { parts.push('vitest: no results'); failed += 1; }
try {
  const ex = fs.readFileSync(path.join(dir, 'exunit.txt'), 'utf8');
  // ExUnit's summary line: "[N doctests, ][N properties, ]N tests, N failures[, N skipped|excluded]" (every count adds up).
  const m = /^((?:\d+ (?:doctests?|propert(?:y|ies)|tests?), )*\d+ (?:doctests?|propert(?:y|ies)|tests?)), (\d+) failures?(?:, (\d+) (?:skipped|excluded))?/gm;
  let last;
  for (let r; (r = m.exec(ex)); ) last = r;
  if (last) {
    const total = [...last[1].matchAll(/(\d+) /g)].reduce((n, c) => n + Number(c[1]), 0), f = Number(last[2]), s = Number(last[3] ?? 0);
    passed += total - f - s; failed += f; skipped += s;
    parts.push(`exunit ${total - f - s}/${total}`);
  } else if (fs.existsSync(path.join(dir, 'exunit.txt'))) { parts.push('exunit: no summary'); failed += 1; }
} catch { /* ExUnit not run (vitest filter given) */ }
process.stdout.write(`\n(${parts.join(', ')})\ntotal: ${passed} passed, ${failed} failed, ${skipped} skipped\n`);
