/**
 * The scripts the README's commands go through: `scripts/with-services.sh`
 * runs its command where it was called from, with the services' variables
 * set (called from another checkout it ran this one's command before, so a
 * comparison ran the same code twice).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../src/config.js';

describe('scripts/with-services.sh', () => {
  it('runs its command in the directory it was called from, with a PostgreSQL and a nats-server of its own', () => {
    const elsewhere = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'pe-with-services-')));
    try {
      const out = execFileSync('bash', [path.join(REPO_ROOT, 'scripts', 'with-services.sh'), 'bash', '-c', 'pwd; echo "$TEST_DATABASE_URL"; echo "$TEST_NATS_URL"'], {
        cwd: elsewhere,
        env: { ...process.env, TEST_DATABASE_URL: '', TEST_NATS_URL: '' },
        stdio: ['ignore', 'pipe', 'pipe'],
        timeout: 120_000,
      })
        .toString()
        .trim()
        .split('\n');
      expect(out[0]).toBe(elsewhere);
      expect(out[1]).toMatch(/^postgres:\/\/postgres@127\.0\.0\.1:\d+\/prompt_engine_test$/);
      expect(out[2]).toMatch(/^nats:\/\/127\.0\.0\.1:\d+$/);
    } finally {
      fs.rmSync(elsewhere, { recursive: true, force: true });
    }
  });
});
