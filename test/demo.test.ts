/**
 * The README's first command, `npm run demo`: the main job on the embedded
 * default (PGlite, the shipped scorer, the offline proposer), run as a user
 * runs it — the built demo (`dist/src/demo.js`; `npm run demo` builds first,
 * which a suite must not do while others spawn sidecars from dist/) in a
 * process of its own. It must end well and show prompts getting better from
 * measured outcomes: the closed loop's table, model by model, against the
 * original prompt.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../src/config.js';

const DEMO = path.join(REPO_ROOT, 'dist', 'src', 'demo.js');

function runDemo(): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [DEMO], { cwd: REPO_ROOT, env: { ...process.env, DATABASE_URL: '', NATS_URL: '', LOG_LEVEL: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    // Decoded as a stream: a character split between two chunks (the chart's blocks) stays whole.
    p.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    p.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The closed loop's table: `| model | original | served, mean | served, last 100 | leader | best |`. */
function loopRows(stdout: string): Array<{ model: string; original: number; mean: number; last100: number; leader: number; best: number }> {
  const section = stdout.slice(stdout.indexOf('## 2.'), stdout.indexOf('## 3.'));
  return section
    .split('\n')
    .filter((l) => /^\| [\w.-]+ \| [0-9.]+ \|/.test(l))
    .map((l) => {
      const [model, ...n] = l.split('|').slice(1, -1).map((c) => c.trim());
      const [original, mean, last100, leader, best] = n.map(Number) as [number, number, number, number, number];
      return { model: model!, original, mean, last100, leader, best };
    });
}

describe('npm run demo (the README\'s first command)', () => {
  it('runs every step on the embedded default and serves better prompts than the original from measured outcomes', async () => {
    const r = await runDemo();
    expect(r.code, r.stderr.slice(-2_000)).toBe(0);
    // progress on stderr, results on stdout
    expect(r.stderr).toContain('[demo] done');
    for (const step of ['## 1. SPARC prompt', '## 2. The closed loop', '## 3. Tracked', '## 4. Trained', '## 5. Ranking', '## 6. COPRO optimization', '## 7. select_variant']) expect(r.stdout).toContain(step);
    const rows = loopRows(r.stdout);
    expect(rows.map((x) => x.model)).toHaveLength(11);
    for (const x of rows) {
      // Never worse than always serving the original, beyond what exploring costs.
      expect(x.last100, x.model).toBeGreaterThanOrEqual(x.original - 0.03);
      expect(x.leader, x.model).toBeGreaterThanOrEqual(x.original);
      expect(x.leader, x.model).toBeLessThanOrEqual(x.best);
    }
    const gain = rows.reduce((s, x) => s + x.last100 - x.original, 0) / rows.length;
    expect(gain).toBeGreaterThan(0.05);
  }, 300_000);
});
