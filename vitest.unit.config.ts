/**
 * `npm run test:unit`: the suites that need no server — no PostgreSQL, no
 * nats-server, no erl, no sidecar process — and finish in seconds. Derived
 * from the suites' text, so a new suite is placed without editing this
 * file: one that names a server (the markers below) runs only in `npm
 * test`; one that needs none but takes minutes (training, the closed loop)
 * is listed in SLOW. `npm test` runs every suite with the default config.
 */
import fs from 'node:fs';
import path from 'node:path';
import { defineConfig } from 'vitest/config';
import base from './vitest.config.js';

/** What a suite that needs a server (or a spawned process) says somewhere in its text. */
const NEEDS_SERVER = /TEST_DATABASE_URL|TEST_NATS_URL|TEST_PG|requireEnv\(|OwnNatsServer|NatsSidecar|startPrivatePostgres|freshDatabase|runErl|spawnErl|erlangEbin|PortClient|SIDECAR|'dist', 'src', 'cli/;
/** Suites that need no server but run for minutes. */
const SLOW = new Set(['experiments.test.ts', 'learning.test.ts', 'learning-eval.test.ts', 'optimizer.test.ts']);

const dir = path.join(import.meta.dirname, 'test');
export const UNIT_SUITES: string[] = fs
  .readdirSync(dir)
  .filter((f) => f.endsWith('.test.ts') && !SLOW.has(f) && !NEEDS_SERVER.test(fs.readFileSync(path.join(dir, f), 'utf8')))
  .map((f) => `test/${f}`);

// Replaces the include list (mergeConfig would add to it).
export default defineConfig({ ...base, test: { ...base.test, include: UNIT_SUITES } });
