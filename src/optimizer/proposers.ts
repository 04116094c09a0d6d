/**
 * COPRO proposers: given the current best instruction and the scored
 * history of attempts (worst first, best last), propose `breadth` new
 * instructions. The offline proposer composes prompt-bit operators
 * (deterministic by seed); the LLM proposer asks an OpenAI-compatible model
 * with COPRO's meta-prompt. Both drop candidates that lose a Handlebars
 * variable.
 */
import { hashSeed, seededRandom } from '../random.js';
import { chat, type LlmEndpoint } from './llmClient.js';
import { ALL_BITS, keepsVariables, type OptimizeContext } from './promptBits.js';

export interface Attempt {
  instruction: string;
  score: number;
}

export interface ProposeRequest {
  base: string;
  /** Scored attempts so far, sorted worst first, best last (as COPRO feeds them). */
  history: Attempt[];
  breadth: number;
  temperature: number;
  round: number;
  context: OptimizeContext;
  signal: AbortSignal;
}

export interface Proposer {
  readonly kind: 'offline' | 'llm';
  propose(req: ProposeRequest): Promise<string[]>;
}

export { hashSeed, seededRandom };

export class OfflineProposer implements Proposer {
  readonly kind = 'offline' as const;

  async propose(req: ProposeRequest): Promise<string[]> {
    const rnd = seededRandom(hashSeed(`${req.base}\u0000${req.round}`));
    const seen = new Set<string>([req.base, ...req.history.map((h) => h.instruction)]);
    const out: string[] = [];
    // Higher temperature → more operators per candidate (bolder rewrites).
    const maxOps = Math.max(1, Math.round(1 + req.temperature * 1.5));
    for (let attempt = 0; attempt < req.breadth * 6 && out.length < req.breadth; attempt++) {
      const usable = ALL_BITS.filter((b) => b.applies(req.base, req.context));
      if (usable.length === 0) break;
      const nOps = 1 + Math.floor(rnd() * Math.min(maxOps, usable.length));
      const picked = shuffle(usable, rnd).slice(0, nOps);
      let cand = req.base;
      for (const bit of picked) if (bit.applies(cand, req.context)) cand = bit.apply(cand, req.context);
      if (!seen.has(cand) && keepsVariables(req.base, cand)) {
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

/** COPRO's "generate instruction from attempts" step, over an OpenAI-compatible endpoint. */
export class LlmProposer implements Proposer {
  readonly kind = 'llm' as const;
  constructor(private readonly endpoint: LlmEndpoint) {}

  async propose(req: ProposeRequest): Promise<string[]> {
    const attempts = req.history
      .map((h, i) => `Instruction #${i + 1}: ${h.instruction}\nResulting score #${i + 1}: ${h.score.toFixed(3)}`)
      .join('\n\n');
    const system =
      'You are an instruction optimizer for large language models. I will give you instructions I tried, with their scores ' +
      '(worst first, best last). Propose a new instruction that will score higher. Keep every {{handlebars}} expression exactly as it is. ' +
      'Reply with the instruction text only.';
    const user = `${attempts || `Instruction #1: ${req.base}`}\n\nProposed instruction:`;
    const out = new Set<string>();
    // One request with n=breadth; servers that ignore n give one choice, so ask again until we have enough.
    for (let tries = 0; tries < 3 && out.size < req.breadth; tries++) {
      const r = await chat(this.endpoint, undefined, [{ role: 'system', content: system }, { role: 'user', content: user }], { temperature: req.temperature, n: req.breadth - out.size }, req.signal);
      for (const t of r.texts) {
        const cand = t.trim();
        if (cand && cand !== req.base && keepsVariables(req.base, cand)) out.add(cand);
      }
    }
    return [...out].slice(0, req.breadth);
  }
}
