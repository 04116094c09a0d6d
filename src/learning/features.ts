/**
 * The learning part, features: what the scorer sees of a prompt in a
 * context. Hashed word uni/bi-grams of the prompt, structural features
 * (length, lines, sections, role line, output format, options, question
 * form, placeholders, examples, constraint words), hashed context (model,
 * task, language, domain, framework, template) and interactions of the
 * structural features with the model (rankings transfer poorly between
 * models: the model is part of the context).
 *
 * v3 adds what the prompt means and how it differs from its base (the
 * experiment's base prompt, the task's default prompt): the structural and
 * style features of the prompt minus the base's, and from the prompt
 * embeddings (embeddings.ts) a fixed random projection of the prompt's
 * vector and of its difference from the base's, their cosine, and the
 * length ratio, the last two also per model. The projection is drawn from a
 * seed in the spec (never fitted to data, so no statistic of a held-out
 * task leaks through it). Without a base the prompt is its own base (every
 * difference zero, cosine 1): the ranking then rests on the other features.
 *
 * The spec is versioned and hashed; a model records the hash it was trained
 * with and is never served with another.
 */
import { createHash } from 'node:crypto';
import { seededRandom } from '../random.js';
import { cosine, EMBEDDING_DIMS, EMBEDDING_MODEL } from './embeddings.js';

export interface FeatureSpec {
  version: number;
  ngramBuckets: number;
  /** scale of the hashed n-gram block (word n-grams are mostly task-specific: they overfit to the tasks seen) */
  ngramWeight: number;
  contextBuckets: number;
  interactionBuckets: number;
  structural: readonly string[];
  /** generic instruction words (not task content): each is a presence feature, and interacts with the model */
  styleWords: readonly string[];
  contextKeys: readonly string[];
  /** v3: the structural and style features of the prompt minus its base's */
  relative: boolean;
  /** v3: features from prompt embeddings (absent: none) */
  embedding?: EmbeddingFeatureSpec;
}

export interface EmbeddingFeatureSpec {
  /** the embedding model (embeddings.ts EMBEDDING_MODEL): its vectors are what the projection reads */
  model: string;
  dims: number;
  /** random projection size (of the prompt's vector, and of its difference from the base's) */
  projection: number;
  /** seed of the projection matrix (N(0, 1) entries) */
  seed: number;
  /** scale of the projected blocks */
  weight: number;
}

/** What a prompt is compared with: its base's text, and both vectors when the spec reads embeddings. */
export interface Relative {
  base?: string;
  embedding?: ArrayLike<number>;
  baseEmbedding?: ArrayLike<number>;
  /** What featurize reads of the base, when the caller computed it once for many prompts (`baseParts`). */
  parts?: BaseParts;
}

/** What featurize reads of a base: computed once for every prompt compared with it (a screened batch shares one base). */
export interface BaseParts {
  /** the base's structural and style features */
  structural: number[];
  /** the projection of the base's vector (absent: the spec reads no embeddings, or the base has no vector) */
  projection?: Float64Array;
}

const SLOT = /\{\{?\s*[a-z_][\w.]*\s*\}?\}/g;
const SLOT_WORDS = /_slot_|[a-z0-9]+(?:'[a-z]+)?/g;

/** A prompt's words as the features read them (placeholders normalised so {sentence} and {{sentence}} read the same). */
const featureWords = (text: string): string[] => text.toLowerCase().replace(SLOT, ' _slot_ ').match(SLOT_WORDS) ?? [];

/** What featurize reads of `base` under `spec` (its vector, when given, projected). */
export function baseParts(base: string, spec: FeatureSpec = FEATURE_SPEC, embedding?: ArrayLike<number>): BaseParts {
  const words = new Set(featureWords(base));
  const structural = [...structuralFeatures(base), ...spec.styleWords.map((w) => (words.has(w) ? 1 : 0))];
  const e = spec.embedding;
  return e === undefined || embedding === undefined || embedding.length !== e.dims ? { structural } : { structural, projection: project(e, embedding) };
}

/** The spec's random projection of a vector. */
function project(e: EmbeddingFeatureSpec, v: ArrayLike<number>): Float64Array {
  const m = projectionOf(e);
  const out = new Float64Array(e.projection);
  for (let j = 0; j < e.projection; j++) {
    let a = 0;
    const row = j * e.dims;
    for (let i = 0; i < e.dims; i++) a += m[row + i]! * v[i]!;
    out[j] = a;
  }
  return out;
}

/** The scalar features of a prompt relative to its base (also crossed with the model). */
export const RELATIVE_SCALARS = ['cosine_to_base', 'distance_to_base', 'length_ratio', 'is_base'] as const;

export const STRUCTURAL = [
  'len_log',
  'lines_log',
  'sections',
  'role_line',
  'output_format',
  'options_list',
  'question',
  'placeholders',
  'examples',
  'constraints',
  'step_by_step',
  'answer_prefix',
  'quotes',
  'imperative',
  // v2: surface form, which transfers across tasks (per model)
  'words_log',
  'leading_newline',
  'trailing_newline',
  'blank_line',
  'ends_colon',
  'ends_output_label',
  'ends_period',
  'ends_question',
  'ends_placeholder',
  'starts_q_label',
  'has_question_mark',
  'quoted_placeholder',
  'labelled_lines',
  'describes_placeholders',
  'mentions_ai',
  'yes_no',
  'polite_request',
  'second_person',
  'starts_uppercase',
  'first_line_short',
] as const;

/** Generic instruction vocabulary (fixed by hand, not fitted to any data). */
export const STYLE_WORDS = [
  'answer', 'based', 'below', 'best', 'carefully', 'choice', 'choose', 'consider', 'correct', 'determine',
  'each', 'following', 'format', 'given', 'identify', 'indicate', 'input', 'instruction', 'list', 'must',
  'only', 'option', 'options', 'output', 'please', 'possible', 'provide', 'provided', 'question', 'respond',
  'response', 'select', 'should', 'statement', 'task', 'tell', 'think', 'whether', 'which', 'what', 'write',
  'you', 'your', 'explain', 'reason', 'classify', 'decide', 'find', 'return', 'text', 'sentence', 'word',
] as const;

export const FEATURE_SPEC: FeatureSpec = {
  version: 3,
  ngramBuckets: 2048,
  ngramWeight: 0.5,
  contextBuckets: 256,
  interactionBuckets: 4096,
  structural: STRUCTURAL,
  styleWords: STYLE_WORDS,
  contextKeys: ['model', 'task', 'language', 'domain', 'framework', 'template'],
  relative: true,
  embedding: { model: EMBEDDING_MODEL, dims: EMBEDDING_DIMS, projection: 32, seed: 1, weight: 0.5 },
};

export function featureDim(spec: FeatureSpec = FEATURE_SPEC): number {
  return relativeBase(spec) + relativeDim(spec);
}

/** Where the v3 blocks start (after the interactions). */
function relativeBase(spec: FeatureSpec): number {
  return spec.ngramBuckets + spec.structural.length + spec.styleWords.length + spec.contextBuckets + spec.interactionBuckets;
}

function relativeDim(spec: FeatureSpec): number {
  const st = spec.relative ? spec.structural.length + spec.styleWords.length : 0;
  const emb = spec.embedding === undefined ? 0 : 2 * spec.embedding.projection + RELATIVE_SCALARS.length;
  return st + emb;
}

const projections = new Map<string, Float32Array>();
/** The fixed projection matrix [projection][dims] of a spec (seeded; not fitted to data). */
function projectionOf(e: EmbeddingFeatureSpec): Float32Array {
  const key = `${e.seed}:${e.projection}:${e.dims}`;
  let m = projections.get(key);
  if (m === undefined) {
    const rnd = seededRandom(e.seed);
    m = new Float32Array(e.projection * e.dims);
    for (let i = 0; i < m.length; i++) m[i] = Math.sqrt(-2 * Math.log(rnd() || 1e-12)) * Math.cos(2 * Math.PI * rnd());
    projections.set(key, m);
  }
  return m;
}

/** [start, end) of the hashed context block (model, task, ...): the inputs a group shares. */
export function contextBlock(spec: FeatureSpec = FEATURE_SPEC): [number, number] {
  const start = spec.ngramBuckets + spec.structural.length + spec.styleWords.length;
  return [start, start + spec.contextBuckets];
}

export function specHash(spec: FeatureSpec = FEATURE_SPEC): string {
  return createHash('sha256').update(JSON.stringify(spec)).digest('hex').slice(0, 16);
}

/** A sparse feature vector: sorted unique indices and their values. */
export interface SparseVec {
  idx: Int32Array;
  val: Float32Array;
}

function fnv(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}

const WORD = /[a-z0-9]+(?:'[a-z]+)?/g;

/** Structural features in [0, 1] (lengths log-scaled). */
export function structuralFeatures(prompt: string): number[] {
  const p = prompt;
  const lower = p.toLowerCase();
  const lines = p.split('\n');
  const words = lower.match(WORD) ?? [];
  return [
    Math.min(1, Math.log1p(p.length) / Math.log1p(4000)),
    Math.min(1, Math.log1p(lines.length) / Math.log1p(100)),
    Math.min(1, lines.filter((l) => /^\s*(#+\s|\d+\.\s|[-*]\s|[A-Z][A-Za-z ]{2,30}:\s*$)/.test(l)).length / 10),
    /^\s*(you are|act as|as an? [a-z]+,)/im.test(p) ? 1 : 0,
    /\b(answer|respond|reply|output|return)\b[^.\n]*\b(with|in|as|only)\b/i.test(p) || /\bformat\b/i.test(p) ? 1 : 0,
    /(\n\s*(\(?[a-e]\)|[a-e]\.|option)\s)|options?:/i.test(p) ? 1 : 0,
    /\?\s*("|$|\n|A:)/m.test(p) || /^(is|are|does|do|can|which|what|who|how|why)\b/i.test(p.trim()) ? 1 : 0,
    Math.min(1, (p.match(/\{\{?[a-z_][\w.]*\}?\}/gi) ?? []).length / 5),
    /\b(for example|e\.g\.|example:|examples:|input:.*\n.*output:)/i.test(p) ? 1 : 0,
    /\b(must|never|do not|don't|always|only|exactly)\b/i.test(p) ? 1 : 0,
    /step[- ]by[- ]step|\bstep \d|think (carefully|through)/i.test(p) ? 1 : 0,
    /(^|\n)\s*(a|answer)\s*:\s*$/i.test(p) ? 1 : 0,
    /["“”]/.test(p) ? 1 : 0,
    words.length > 0 && ['identify', 'determine', 'decide', 'answer', 'choose', 'select', 'write', 'list', 'find', 'tell', 'classify', 'evaluate', 'given', 'read'].includes(words[0]!) ? 1 : 0,
    // v2
    Math.min(1, Math.log1p(words.length) / Math.log1p(600)),
    /^\s*\n/.test(p) ? 1 : 0,
    /\n\s*$/.test(p) ? 1 : 0,
    /\n[ \t]*\n/.test(p.trim()) ? 1 : 0,
    /:\s*$/.test(p) ? 1 : 0,
    /\b(output|answer|response|result|label)\s*:\s*$/i.test(p) ? 1 : 0,
    /\.\s*$/.test(p) ? 1 : 0,
    /\?\s*$/.test(p) ? 1 : 0,
    /\}["'”]?\s*$/.test(p) ? 1 : 0,
    /^\s*q\s*:/i.test(p) ? 1 : 0,
    p.includes('?') ? 1 : 0,
    /["“'][^"“”'\n]{0,3}\{\{?[a-z_][\w.]*\}?\}[^"“”'\n]{0,3}["”']/i.test(p) ? 1 : 0,
    Math.min(1, lines.filter((l) => /^\s*[A-Za-z][\w ]{0,24}:/.test(l)).length / 4),
    /\b(placeholders?|represented by|keywords?|variables?)\b/i.test(p) ? 1 : 0,
    /\b(gpt|language model|ai|assistant|chatbot)\b/i.test(p) ? 1 : 0,
    /\byes or no\b|\byes\/no\b|\btrue or false\b|\bvalid or invalid\b/i.test(p) ? 1 : 0,
    /\b(please|can you|could you|would you)\b/i.test(p) ? 1 : 0,
    /\b(you|your)\b/i.test(p) ? 1 : 0,
    /^\s*[A-Z]/.test(p) ? 1 : 0,
    (lines.find((l) => l.trim() !== '') ?? '').trim().length <= 40 ? 1 : 0,
  ];
}

/** Featurize one prompt in a context (v3: relative to its base, with the embeddings when the spec reads them). */
export function featurize(prompt: string, context: Record<string, string>, spec: FeatureSpec = FEATURE_SPEC, rel: Relative = {}): SparseVec {
  const acc = new Map<number, number>();
  const add = (i: number, v: number): void => void acc.set(i, (acc.get(i) ?? 0) + v);
  // n-grams (placeholders normalised so {sentence} and {{sentence}} read the same)
  const words = featureWords(prompt);
  const grams: string[] = [];
  for (let i = 0; i < words.length; i++) {
    grams.push(`u:${words[i]}`);
    if (i + 1 < words.length) grams.push(`b:${words[i]} ${words[i + 1]}`);
  }
  const gw = grams.length === 0 ? 0 : spec.ngramWeight / Math.sqrt(grams.length);
  for (const g of grams) add(fnv(g) % spec.ngramBuckets, gw);
  // structural and style words
  const base = spec.ngramBuckets;
  const present = new Set(words);
  const st = [...structuralFeatures(prompt), ...spec.styleWords.map((w) => (present.has(w) ? 1 : 0))];
  const names = [...spec.structural, ...spec.styleWords.map((w) => `w:${w}`)];
  st.forEach((v, i) => {
    if (v !== 0) add(base + i, v);
  });
  // context
  const cbase = base + spec.structural.length + spec.styleWords.length;
  for (const k of spec.contextKeys) {
    const v = context[k];
    if (v !== undefined && v !== '') add(cbase + (fnv(`${k}=${v.toLowerCase()}`) % spec.contextBuckets), 1);
  }
  // (structural and style) × model interactions
  const ibase = cbase + spec.contextBuckets;
  const model = (context.model ?? '').toLowerCase();
  if (model !== '')
    st.forEach((v, i) => {
      if (v !== 0) add(ibase + (fnv(`${model}*${names[i]}`) % spec.interactionBuckets), v);
    });
  // v3: relative to the base (the prompt itself when there is none)
  let rbase = ibase + spec.interactionBuckets;
  const baseText = rel.base ?? prompt;
  if (spec.relative) {
    if (baseText !== prompt) {
      const bst = (rel.parts ?? baseParts(baseText, spec)).structural;
      st.forEach((v, i) => {
        const d = v - bst[i]!;
        if (d !== 0) add(rbase + i, d);
      });
    }
    rbase += spec.structural.length + spec.styleWords.length;
  }
  const e = spec.embedding;
  if (e !== undefined) {
    const same = baseText === prompt;
    const pv = rel.embedding;
    const bv = same ? pv : rel.baseEmbedding;
    let cos = 1;
    if (pv !== undefined && pv.length === e.dims) {
      const scale = e.weight; // USE vectors are about unit length: a projected coordinate is about N(0, 1)
      const diff = bv !== undefined && bv.length === e.dims && !same;
      // The projection is linear: the difference's is the prompt's minus the base's (computed once per base when given).
      const a = project(e, pv);
      const b = diff ? (rel.parts?.projection ?? project(e, bv)) : undefined;
      for (let j = 0; j < e.projection; j++) {
        if (a[j] !== 0) add(rbase + j, a[j]! * scale);
        const d = b === undefined ? 0 : a[j]! - b[j]!;
        if (d !== 0) add(rbase + e.projection + j, d * scale);
      }
      if (diff) cos = cosine(pv, bv);
    }
    const sbase = rbase + 2 * e.projection;
    const lenRatio = Math.max(-1, Math.min(1, Math.log((prompt.length + 1) / (baseText.length + 1)) / Math.log(8)));
    const scalars = [cos, Math.min(1, Math.sqrt(Math.max(0, 2 * (1 - cos)))), lenRatio, same ? 1 : 0];
    scalars.forEach((v, i) => {
      if (v === 0) return;
      add(sbase + i, v);
      if (model !== '') add(ibase + (fnv(`${model}*${RELATIVE_SCALARS[i]}`) % spec.interactionBuckets), v);
    });
  }
  const idx = Int32Array.from([...acc.keys()].sort((a, b) => a - b));
  const val = Float32Array.from(idx, (i) => acc.get(i)!);
  return { idx, val };
}

/** Dense rows for onnxruntime: [n, dim] float32. */
export function toDense(vecs: SparseVec[], dim: number): Float32Array {
  const out = new Float32Array(vecs.length * dim);
  vecs.forEach((v, r) => {
    for (let k = 0; k < v.idx.length; k++) out[r * dim + v.idx[k]!] = v.val[k]!;
  });
  return out;
}
