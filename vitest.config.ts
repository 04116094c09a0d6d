import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

/**
 * Suites that take minutes, longest first. Vitest orders files by the
 * timings of earlier runs, and a fresh clone (CI) has none: it falls back to
 * file size, which starts the longest suite (learning-eval, a short file)
 * last and leaves one worker running alone at the end. Started first, the
 * long suites overlap the short ones.
 */
const LONGEST_FIRST = ['learning-eval', 'experiments', 'cli', 'fleet', 'port', 'learning', 'nats-cluster'];

class LongestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const rank = (f: TestSpecification): number => {
      const i = LONGEST_FIRST.findIndex((name) => f.moduleId.endsWith(`/test/${name}.test.ts`));
      return i < 0 ? LONGEST_FIRST.length : i;
    };
    return [...(await super.sort(files))].sort((a, b) => rank(a) - rank(b));
  }
}

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Suites start real processes (sidecars, nats-server, PostgreSQL): run files in
    // forks, few at a time, on a 2-core machine.
    pool: 'forks',
    maxWorkers: 2,
    // Suites start real sidecars: a fresh PGlite store takes seconds to open, tens of seconds on a busy 2-core machine.
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: ['default'],
    sequence: { sequencer: LongestFirst },
  },
});
