/**
 * Proposers: given a base instruction and the attempts so far with their
 * measured scores, propose `n` new instructions. One interface for COPRO
 * and the closed loop. The offline proposer composes prompt-bit operators
 * (deterministic by seed); the LLM proposer asks an OpenAI-compatible model
 * in one of two styles (`copro`: DSPy COPRO's meta-prompt over scored
 * attempts; `loop`: rewrites that keep the task, showing the variants tried
 * with their success rates so it builds on them and does not repeat them);
 * the fallback proposer uses the LLM and falls back to the offline one,
 * with a warning, when the endpoint fails or answers nothing usable. Every
 * candidate keeps the base's variables by the rule the caller names
 * (variables.ts).
 */
import type { Logger } from 'pino';
import { hashSeed, seededRandom } from '../random.js';
import { chat, type LlmEndpoint } from './llmClient.js';
import { ALL_BITS, type OptimizeContext } from './promptBits.js';
import { variablesKept, type VariableRule } from './variables.js';

export interface Attempt {
  text: string;
  /** Its measured or predicted score (a success rate, or an evaluator's score). */
  score: number;
  /** Outcomes behind the score, when it was measured. */
  count?: number;
}

export interface ProposalRequest {
  base: string;
  /** Attempts so far, best first. */
  tried: readonly Attempt[];
  n: number;
  /** Boldness: more operators per offline edit, a hotter LLM. */
  temperature: number;
  /** Distinguishes successive batches (the offline proposer's seed). */
  round: number;
  context: OptimizeContext;
  /** Which variables a candidate must keep. */
  variables: VariableRule;
  /** What the attempts' scores measure, and a sentence saying so to an LLM (the closed loop's objective). */
  objective?: { valueName: string; note: string };
  signal: AbortSignal;
}

export type ProposerKind = 'offline' | 'llm';

export interface Proposer {
  readonly kind: ProposerKind;
  propose(req: ProposalRequest): Promise<string[]>;
}

export class OfflineProposer implements Proposer {
  readonly kind = 'offline' as const;

  async propose(req: ProposalRequest): Promise<string[]> {
    const rnd = seededRandom(hashSeed(`${req.base}\u0000${req.round}`));
    const seen = new Set<string>([req.base, ...req.tried.map((h) => h.text)]);
    const out: string[] = [];
    // Higher temperature → more operators per candidate (bolder rewrites).
    const maxOps = Math.max(1, Math.round(1 + req.temperature * 1.5));
    // What applies to the base is the same for every attempt (the closed loop asks for a batch per refill).
    const usable = ALL_BITS.filter((b) => b.applies(req.base, req.context));
    for (let attempt = 0; attempt < req.n * 6 && out.length < req.n; attempt++) {
      if (usable.length === 0) break;
      const nOps = 1 + Math.floor(rnd() * Math.min(maxOps, usable.length));
      const picked = shuffle(usable, rnd).slice(0, nOps);
      let cand = req.base;
      for (const bit of picked) if (bit.applies(cand, req.context)) cand = bit.apply(cand, req.context);
      if (!seen.has(cand) && variablesKept(req.base, cand, req.variables)) {
        seen.add(cand);
        out.push(cand);
      }
    }
    return out;
  }
}

function shuffle<T>(xs: readonly T[], rnd: () => number): T[] {
  const a = xs.slice();
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

const COPRO_SYSTEM =
  'You are an instruction optimizer for large language models. I will give you instructions I tried, with their scores ' +
  '(worst first, best last). Propose a new instruction that will score higher. Keep every {{handlebars}} expression exactly as it is. ' +
  'Reply with the instruction text only.';

const LOOP_SYSTEM =
  'You improve instructions given to a language model. You get an instruction, and the variants of it already tried with their measured ' +
  'success rates. Write a new variant of the instruction that asks for exactly the same task and could succeed more often. Keep every ' +
  'placeholder such as {name} or {{name}} exactly as written, add none and drop none. Reply with the new instruction only.';

/** An OpenAI-compatible model proposing in the style of COPRO's meta-prompt or of the closed loop's rewrite request. */
export class LlmProposer implements Proposer {
  readonly kind = 'llm' as const;
  constructor(
    private readonly endpoint: LlmEndpoint,
    private readonly style: 'copro' | 'loop',
  ) {}

  async propose(req: ProposalRequest): Promise<string[]> {
    const messages = this.style === 'copro' ? coproMessages(req) : loopMessages(req);
    const out = new Set<string>();
    // One request with n; servers that ignore n give one choice, so COPRO asks again until it has enough.
    for (let tries = 0; tries < (this.style === 'copro' ? 3 : 1) && out.size < req.n; tries++) {
      const r = await chat(this.endpoint, undefined, messages, { temperature: req.temperature, n: req.n - out.size }, req.signal);
      for (const t of r.texts) {
        const cand = t.trim();
        if (cand && cand !== req.base && variablesKept(req.base, cand, req.variables)) out.add(cand);
      }
    }
    return [...out].slice(0, req.n);
  }
}

function coproMessages(req: ProposalRequest): Array<{ role: 'system' | 'user'; content: string }> {
  const attempts = [...req.tried]
    .reverse()
    .map((h, i) => `Instruction #${i + 1}: ${h.text}\nResulting score #${i + 1}: ${h.score.toFixed(3)}`)
    .join('\n\n');
  return [
    { role: 'system', content: COPRO_SYSTEM },
    { role: 'user', content: `${attempts || `Instruction #1: ${req.base}`}\n\nProposed instruction:` },
  ];
}

function loopMessages(req: ProposalRequest): Array<{ role: 'system' | 'user'; content: string }> {
  const tried = req.tried
    .slice(0, 12)
    .map((t, i) => `Variant ${i + 1} (${req.objective?.valueName ?? 'success rate'} ${t.score.toFixed(2)} over ${t.count ?? 0} runs):\n${t.text}`)
    .join('\n\n');
  const note = req.objective === undefined ? '' : `${req.objective.note}\n\n`;
  return [
    { role: 'system', content: LOOP_SYSTEM },
    { role: 'user', content: `Instruction:\n${req.base}\n\n${note}${tried ? `Already tried:\n\n${tried}\n\n` : ''}New variant:` },
  ];
}

/** The LLM proposer when an endpoint is configured, falling back to the offline one (with a warning) when it fails. */
export class FallbackProposer implements Proposer {
  readonly figures = { llm_batches: 0, llm_failures: 0, offline_batches: 0 };
  private lastKind: ProposerKind = 'offline';

  constructor(
    private readonly llm: Proposer | undefined,
    private readonly offline: Proposer,
    private readonly log: Logger,
  ) {}

  /** The kind of the last batch. */
  get kind(): ProposerKind {
    return this.lastKind;
  }

  async proposeWithKind(req: ProposalRequest): Promise<{ texts: string[]; kind: ProposerKind }> {
    if (this.llm !== undefined) {
      try {
        const texts = await this.llm.propose(req);
        if (texts.length > 0) {
          this.figures.llm_batches++;
          return { texts, kind: 'llm' };
        }
        throw new Error('the LLM proposed nothing usable');
      } catch (err) {
        if (req.signal.aborted) throw err;
        this.figures.llm_failures++;
        this.log.warn({ err: (err as Error).message }, 'LLM proposer failed; using the offline proposer for this batch');
      }
    }
    this.figures.offline_batches++;
    return { texts: await this.offline.propose(req), kind: 'offline' };
  }

  async propose(req: ProposalRequest): Promise<string[]> {
    const r = await this.proposeWithKind(req);
    this.lastKind = r.kind;
    return r.texts;
  }
}
