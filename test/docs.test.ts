/**
 * The docs stay true to the code: every environment variable src/ reads and
 * every flag a command takes is in docs/configuration.md; every link in the
 * README and docs/ names a file in this repository (no design document
 * outside it); no source header cites a design file instead of docs/.
 * (docs/ops.md is checked against the op table in test/ops.test.ts.)
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { VERBS } from '../src/cli.js';
import { REPO_ROOT } from '../src/config.js';

const read = (rel: string): string => fs.readFileSync(path.join(REPO_ROOT, rel), 'utf8');

function files(dir: string, ext: RegExp): string[] {
  const abs = path.join(REPO_ROOT, dir);
  if (!fs.existsSync(abs)) return [];
  return fs.readdirSync(abs, { withFileTypes: true }).flatMap((d) => {
    const rel = path.join(dir, d.name);
    if (d.isDirectory()) return d.name === 'node_modules' ? [] : files(rel, ext);
    return ext.test(d.name) ? [rel] : [];
  });
}

describe('docs/configuration.md', () => {
  const conf = read('docs/configuration.md');

  it('names every environment variable src/ reads', () => {
    const names = new Set<string>();
    for (const f of files('src', /\.ts$/)) {
      const text = read(f);
      for (const m of text.matchAll(/\benv(?:\.([A-Z][A-Z0-9_]+)|\[\s*'([A-Z][A-Z0-9_]+)'\s*\])/g)) names.add(m[1] ?? m[2]!);
      // Names built from a prefix (PROMPT_ENGINE_LOOP_${suffix}): the suffixes are listed beside it.
      if (text.includes('PROMPT_ENGINE_LOOP_${suffix}')) for (const m of text.matchAll(/:\s*'([A-Z_]+)'/g)) names.add(`PROMPT_ENGINE_LOOP_${m[1]}`);
    }
    expect(names.size).toBeGreaterThan(20);
    expect([...names].filter((n) => !conf.includes(`\`${n}\``) && !new RegExp(`\`[^\`]*\\b${n}\\b[^\`]*\``).test(conf)).sort()).toEqual([]);
  });

  it('names every flag of every command', () => {
    const missing = VERBS.flatMap((v) => v.flags.filter((f) => !conf.includes(`--${f.name}`)).map((f) => `${v.name} --${f.name}`));
    expect(missing).toEqual([]);
  });
});

describe('links', () => {
  const pages = ['README.md', ...files('docs', /\.md$/)];

  it('every link in the README and docs/ is a file of this repository', () => {
    const bad: string[] = [];
    for (const page of pages) {
      for (const m of read(page).matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1]!.split('#')[0]!;
        if (target === '') continue; // an anchor on the same page
        const abs = path.resolve(path.dirname(path.join(REPO_ROOT, page)), target);
        if (/^[a-z]+:/i.test(target) || !abs.startsWith(REPO_ROOT + path.sep) || !fs.existsSync(abs)) bad.push(`${page}: ${m[1]}`);
      }
    }
    expect(bad).toEqual([]);
  });

  it('no source, test, bench or script cites a design file outside docs/', () => {
    const cites = ['src', 'test', 'bench', 'scripts', 'port']
      .flatMap((d) => files(d, /\.(ts|mjs|js|sh|erl)$/))
      .filter((f) => f !== path.join('test', 'docs.test.ts'))
      .filter((f) => /DESIGN(\.md)?\s*§|DESIGN\.md|\.\.\/shared\//.test(read(f)));
    expect(cites).toEqual([]);
  });
});
