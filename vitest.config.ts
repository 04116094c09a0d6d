import { defineConfig } from 'vitest/config';

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
  },
});
