import fs from 'node:fs';
import path from 'node:path';
import { BaseSequencer, type TestSpecification } from 'vitest/node';
import { defineConfig } from 'vitest/config';

/**
 * The suites that run for minutes, longest first (their times: BENCHMARKS.md,
 * the test run). With no timing cache (a fresh clone, CI)
 * vitest starts the largest files first, and the scorer's evaluation, a
 * small file that runs for minutes, started last: the two workers then
 * ended minutes apart. These start first; the rest follow in vitest's order
 * (its cache's durations once it has them).
 */
export const LONG_SUITES = ['learning-eval.test.ts', 'fleet.test.ts', 'cli.test.ts', 'port.test.ts', 'experiments.test.ts', 'demo.test.ts'];
for (const name of LONG_SUITES) if (!fs.existsSync(path.join(import.meta.dirname, 'test', name))) throw new Error(`vitest.config.ts: LONG_SUITES names test/${name}, which does not exist`);

class LongestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const rank = (f: TestSpecification): number => {
      const i = LONG_SUITES.findIndex((name) => f.moduleId.endsWith(`/test/${name}`));
      return i < 0 ? LONG_SUITES.length : i;
    };
    // Array.prototype.sort is stable: vitest's order stays among the others.
    return sorted.sort((a, b) => rank(a) - rank(b));
  }
}

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Suites start real processes (sidecars, nats-server, PostgreSQL): run files in
    // forks, few at a time, on a 2-core machine.
    pool: 'forks',
    maxWorkers: 2,
    sequence: { sequencer: LongestFirst },
    // Suites start real sidecars: a fresh PGlite store takes seconds to open, tens of seconds on a busy 2-core machine.
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
