/**
 * The closed-loop simulation's world, from data/multiprompt: for each task
 * its instruction paraphrases, and for each (task, model) group the
 * measured accuracy of every paraphrase. The engine never sees these
 * accuracies: only the simulator (which draws each round's success) and
 * the scoreboard read them.
 */
import fs from 'node:fs';
import path from 'node:path';
import { MULTIPROMPT_DIR } from '../multiprompt.js';

export interface Paraphrase {
  id: string;
  text: string;
  method: string;
  accs: Record<string, number>;
}

export interface Task {
  name: string;
  paraphrases: Paraphrase[];
  /** The task's first `default` template: where every group starts. */
  base: Paraphrase;
}

export interface Group {
  task: Task;
  model: string;
  /** Accuracy by paraphrase text for this model. */
  accOf: Map<string, number>;
  /** The same, by text without leading and trailing white space (a proposer trims what a model answers). */
  accOfTrimmed: Map<string, number>;
  baseAcc: number;
  bestAcc: number;
  medianAcc: number;
}

export function loadTasks(dir: string = MULTIPROMPT_DIR): Task[] {
  const out: Task[] = [];
  for (const suite of fs.readdirSync(dir).filter((d) => fs.statSync(path.join(dir, d)).isDirectory()).sort()) {
    for (const file of fs.readdirSync(path.join(dir, suite)).filter((f) => f.endsWith('.json')).sort()) {
      const raw = JSON.parse(fs.readFileSync(path.join(dir, suite, file), 'utf8')) as { paraphrases: Record<string, { template: string; method: string; accs: Record<string, number> }> };
      const paraphrases = Object.entries(raw.paraphrases)
        .sort(([a], [b]) => Number(a) - Number(b))
        .map(([id, p]) => ({ id, text: p.template, method: p.method, accs: p.accs }));
      const base = paraphrases.find((p) => p.method === 'default');
      if (base === undefined) continue;
      out.push({ name: file.replace(/\.json$/, ''), paraphrases, base });
    }
  }
  return out;
}

export function groupsOf(task: Task): Group[] {
  return Object.keys(task.base.accs)
    .sort()
    .map((model) => {
      const accOf = new Map<string, number>();
      for (const p of task.paraphrases) if (p.accs[model] !== undefined && !accOf.has(p.text)) accOf.set(p.text, p.accs[model]!);
      const accs = [...accOf.values()].sort((a, b) => a - b);
      const accOfTrimmed = new Map([...accOf].map(([t, a]) => [t.trim(), a]));
      return { task, model, accOf, accOfTrimmed, baseAcc: task.base.accs[model]!, bestAcc: accs[accs.length - 1]!, medianAcc: accs[Math.floor(accs.length / 2)]! };
    });
}

/**
 * The accuracy a served text earns: its own when it is a paraphrase of the
 * pool; the accuracy of the longest pool paraphrase it contains (an offline
 * edit wraps the base); else the pool's median.
 */
export function accuracyOf(g: Group, text: string): number {
  const exact = g.accOf.get(text) ?? g.accOfTrimmed.get(text.trim());
  if (exact !== undefined) return exact;
  let best: { len: number; acc: number } | undefined;
  for (const [t, acc] of g.accOf) if (text.includes(t) && (best === undefined || t.length > best.len)) best = { len: t.length, acc };
  return best?.acc ?? g.medianAcc;
}
