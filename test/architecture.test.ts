/**
 * The layering of src/, checked on every run: no import runs up a layer,
 * and the services do not import each other in a circle. Layers, bottom to
 * top (the README's layout table shows the same):
 *   0 core       codec/, config, log, random, timeouts, version, engine (the typed container)
 *   1 contract   contract/ (errors, argument readers)
 *   2 services   store/, cache/, nats/, learning/, templates/, optimizer/, experiments/, services.ts (composition)
 *   3 ops        ops/
 *   4 transports transports/, dashboard/ (the page over HTTP; dashboard/client/ is the script it serves)
 *   5 entry      cli and cli/ (grammar, tables, verbs), serve, demo, learning/offline/ (tooling the sidecar never loads)
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = path.resolve(import.meta.dirname, '..', 'src');

function files(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((d) => (d.isDirectory() ? files(path.join(dir, d.name)) : d.name.endsWith('.ts') ? [path.join(dir, d.name)] : []));
}

/** A file's room: its folder under src/ (learning/offline counts as its own room), or the file name at the top. */
function room(file: string): string {
  const rel = path.relative(SRC, file).split(path.sep);
  if (rel[0] === 'learning' && rel[1] === 'offline') return 'learning/offline';
  return rel.length === 1 ? rel[0]!.replace(/\.ts$/, '') : rel[0]!;
}

const LAYER: Record<string, number> = {
  codec: 0, config: 0, log: 0, random: 0, timeouts: 0, version: 0, engine: 0,
  contract: 1,
  store: 2, cache: 2, nats: 2, learning: 2, templates: 2, optimizer: 2, experiments: 2, services: 2,
  ops: 3,
  transports: 4, dashboard: 4,
  cli: 5, serve: 5, demo: 5, 'learning/offline': 5,
};

function imports(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/^\s*(?:import|export)\s[^'"]*?from\s+'(\.[^']+)'|^\s*import\s+'(\.[^']+)'|import\('(\.[^']+)'\)/gm)) {
    const spec = m[1] ?? m[2] ?? m[3]!;
    out.push(path.resolve(path.dirname(file), spec.replace(/\.js$/, '.ts')));
  }
  return out;
}

describe('architecture', () => {
  const all = files(SRC);
  const edges = all.flatMap((f) => imports(f).map((to) => ({ from: f, to })));

  it('places every file of src/ in a layer', () => {
    const unplaced = all.filter((f) => LAYER[room(f)] === undefined).map((f) => path.relative(SRC, f));
    expect(unplaced).toEqual([]);
  });

  it('has no import that runs up a layer', () => {
    const up = edges
      .filter(({ from, to }) => (LAYER[room(to)] ?? 99) > (LAYER[room(from)] ?? -1))
      .map(({ from, to }) => `${path.relative(SRC, from)} -> ${path.relative(SRC, to)}`);
    expect(up).toEqual([]);
  });

  it('has no circle between rooms', () => {
    const graph = new Map<string, Set<string>>();
    for (const { from, to } of edges) {
      const a = room(from);
      const b = room(to);
      if (a !== b) (graph.get(a) ?? graph.set(a, new Set()).get(a)!).add(b);
    }
    const cycles: string[] = [];
    const state = new Map<string, 'open' | 'done'>();
    const visit = (n: string, trail: string[]): void => {
      if (state.get(n) === 'done') return;
      if (state.get(n) === 'open') return void cycles.push([...trail.slice(trail.indexOf(n)), n].join(' -> '));
      state.set(n, 'open');
      for (const m of graph.get(n) ?? []) visit(m, [...trail, n]);
      state.set(n, 'done');
    };
    for (const n of graph.keys()) visit(n, []);
    expect(cycles).toEqual([]);
  });

  it('reads process.env in config.ts only: every setting is read there once and passed down', () => {
    const readers = all
      .filter((f) => path.relative(SRC, f) !== 'config.ts')
      .filter((f) => /\bprocess\s*(\.\s*env\b|\[\s*['"`]env['"`]\s*\])|\{[^}]*\benv\b[^}]*\}\s*=\s*process\b/.test(fs.readFileSync(f, 'utf8')))
      .map((f) => path.relative(SRC, f));
    expect(readers).toEqual([]);
  });

  it('opens a NATS connection in nats/link.ts only: one connection per engine', () => {
    const openers = all
      .filter((f) => path.relative(SRC, f) !== path.join('nats', 'link.ts'))
      .filter((f) => /import\s*\{[^}]*\bconnect\b[^}]*\}\s*from\s*'nats'/.test(fs.readFileSync(f, 'utf8')))
      .map((f) => path.relative(SRC, f));
    expect(openers).toEqual([]);
  });

  it('opens each room with a header that says what it owns', () => {
    const bare = all.filter((f) => !/^\s*(#!.*\n)?\s*\/\*\*/.test(fs.readFileSync(f, 'utf8'))).map((f) => path.relative(SRC, f));
    expect(bare).toEqual([]);
  });
});
