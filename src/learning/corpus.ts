/**
 * The shipped corpus (data/multiprompt/, see its NOTICE.md), read by the
 * offline tooling and by the learner, which retrains on it beside the
 * store's history so that continuous training does not forget it.
 * Loader for the multiprompt evaluation data (data/multiprompt/, see its
 * NOTICE.md): every (task, instruction template, model) cell is an accuracy
 * over n real executions. A cell becomes ONE tracking entry standing for its
 * n executions: `success` = majority, `confidence_score` = k/n, and
 * `metadata` = {prompt, task, model, method, n, successes}. The trainer reads
 * `n`/`successes` back as one example of weight n with soft target k/n.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { REPO_ROOT } from '../config.js';

export interface Cell {
  task: string;
  suite: string;
  templateId: string;
  template: string;
  method: string;
  correct: boolean;
  model: string;
  acc: number;
  n: number;
  successes: number;
  /** The task's base: its first `default` template (where the closed loop starts; what a variant is compared with). */
  base: string;
}

export const MULTIPROMPT_DIR = path.join(REPO_ROOT, 'data', 'multiprompt');

/** `word_not_containing` ran 26 instances per template; every other task 100. */
const EXECUTIONS: Record<string, number> = { word_not_containing: 26 };

interface RawFile {
  paraphrases: Record<string, { template: string; method: string; correct: boolean; accs: Record<string, number> }>;
}

export function loadCells(dir: string = MULTIPROMPT_DIR, tasks?: readonly string[]): Cell[] {
  const out: Cell[] = [];
  for (const suite of fs.readdirSync(dir).filter((d) => fs.statSync(path.join(dir, d)).isDirectory()).sort()) {
    for (const file of fs.readdirSync(path.join(dir, suite)).filter((f) => f.endsWith('.json')).sort()) {
      const task = file.replace(/\.json$/, '');
      if (tasks !== undefined && !tasks.includes(task)) continue;
      const raw = JSON.parse(fs.readFileSync(path.join(dir, suite, file), 'utf8')) as RawFile;
      const n = EXECUTIONS[task] ?? 100;
      const base = Object.entries(raw.paraphrases).sort(([a], [b]) => Number(a) - Number(b)).find(([, p]) => p.method === 'default')?.[1].template ?? '';
      for (const [id, p] of Object.entries(raw.paraphrases)) {
        for (const [model, acc] of Object.entries(p.accs)) {
          const successes = Math.round(acc * n);
          out.push({ task, suite, templateId: `${task}#${id}`, template: p.template, method: p.method, correct: p.correct, model, acc, n, successes, base });
        }
      }
    }
  }
  return out;
}

export function promptIdOfTemplate(template: string): string {
  return `p_${createHash('sha256').update(template).digest('hex').slice(0, 16)}`;
}

/** A cell as a PromptExecutionEntry (the shape `track_execution` takes). */
export function cellToEntry(c: Cell): Record<string, unknown> {
  return {
    prompt_id: promptIdOfTemplate(c.template),
    execution_time_ms: 0,
    success: c.successes * 2 >= c.n,
    confidence_score: c.acc,
    context_signature: `${c.task}|${c.model}`,
    response_length: 0,
    metadata: { prompt: c.template, task: c.task, model: c.model, method: c.method, n: String(c.n), successes: String(c.successes) },
  };
}

/** Every distinct text of the corpus that is ever embedded (templates and bases), sorted. */
export function corpusTexts(cells: Cell[] = loadCells()): string[] {
  return [...new Set(cells.flatMap((c) => [c.template, c.base]))].filter((t) => t !== '').sort();
}

/** A hash of those texts: an embedding file of the corpus records it, and a test checks it. */
export function corpusTextsHash(texts: readonly string[] = corpusTexts()): string {
  return createHash('sha256').update(texts.join('\u0000')).digest('hex').slice(0, 16);
}
