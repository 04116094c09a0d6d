/**
 * npm commands in this checkout print no warnings (a warning on every
 * command hides the one that matters), and no dependency's install script
 * runs: onnxruntime-node's would download the CUDA execution provider on
 * linux/x64 (.npmrc says why). Runs the npm on the PATH, as a user would.
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../src/config.js';

function npm(...args: string[]): { code: number | null; out: string } {
  // Without the npm_* variables of an enclosing `npm test`, as on a fresh shell.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k)));
  const r = spawnSync('npm', args, { cwd: REPO_ROOT, encoding: 'utf8', env, timeout: 120_000 });
  return { code: r.status, out: `${r.stdout}\n${r.stderr}` };
}

describe('npm in this checkout', () => {
  it.each([['ls --depth=0'], ['config list'], ['run'], ['ci --dry-run']])('npm %s prints no warning', (line) => {
    const r = npm(...line.split(' '));
    expect(r.code, r.out).toBe(0);
    expect(r.out).not.toMatch(/npm warn/i);
  }, 120_000);

  it("runs no dependency's install script (onnxruntime-node's would download CUDA binaries)", () => {
    expect(npm('config', 'get', 'ignore-scripts').out.trim().split('\n')[0]).toBe('true');
  });
});
