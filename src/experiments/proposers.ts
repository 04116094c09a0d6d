/**
 * Where the closed loop's candidate prompts come from. With an
 * OpenAI-compatible endpoint (`LLM_URL`), one chat request with `n` asks for
 * rewrites of the base that keep its meaning and variables, showing the
 * model the variants tried so far with their measured success rates
 * (verbatim, so it can build on them and not repeat them). Without one —
 * or when the endpoint fails or answers garbage — the offline proposer
 * rewrites the base with COPRO's prompt-bit operators (deterministic).
 */
import type { Logger } from 'pino';
import { chat, type LlmEndpoint } from '../optimizer/llmClient.js';
import { OfflineProposer } from '../optimizer/proposers.js';
import type { VariantOrigin } from '../store/experimentRecords.js';

export interface ProposalRequest {
  base: string;
  /** Variants tried so far, best measured first. */
  tried: ReadonlyArray<{ text: string; successRate: number; count: number }>;
  n: number;
  /** Distinguishes successive batches of one experiment (offline proposer seed). */
  round: number;
  context: Record<string, string>;
  signal: AbortSignal;
}

export interface LoopProposer {
  readonly kind: Exclude<VariantOrigin, 'base'>;
  propose(req: ProposalRequest): Promise<string[]>;
}

export class OfflineLoopProposer implements LoopProposer {
  readonly kind = 'offline' as const;
  private readonly inner = new OfflineProposer();

  propose(req: ProposalRequest): Promise<string[]> {
    return this.inner.propose({
      base: req.base,
      history: req.tried.map((t) => ({ instruction: t.text, score: t.successRate })),
      breadth: req.n,
      temperature: 1.2,
      round: req.round,
      context: { language: req.context.language, domain: req.context.domain, task: req.context.task },
      signal: req.signal,
    });
  }
}

const SYSTEM =
  'You improve instructions given to a language model. You get an instruction, and the variants of it already tried with their measured ' +
  'success rates. Write a new variant of the instruction that asks for exactly the same task and could succeed more often. Keep every ' +
  'placeholder such as {name} or {{name}} exactly as written, add none and drop none. Reply with the new instruction only.';

export class LlmLoopProposer implements LoopProposer {
  readonly kind = 'llm' as const;
  constructor(private readonly endpoint: LlmEndpoint) {}

  async propose(req: ProposalRequest): Promise<string[]> {
    const tried = req.tried
      .slice(0, 12)
      .map((t, i) => `Variant ${i + 1} (success rate ${t.successRate.toFixed(2)} over ${t.count} runs):\n${t.text}`)
      .join('\n\n');
    const user = `Instruction:\n${req.base}\n\n${tried ? `Already tried:\n\n${tried}\n\n` : ''}New variant:`;
    const r = await chat(this.endpoint, undefined, [{ role: 'system', content: SYSTEM }, { role: 'user', content: user }], { temperature: 1, n: req.n }, req.signal);
    return r.texts.map((t) => t.trim()).filter((t) => t.length > 0);
  }
}

/** The LLM proposer when an endpoint is configured, falling back to the offline one (with a warning) when it fails. */
export class FallbackProposer implements LoopProposer {
  readonly figures = { llm_batches: 0, llm_failures: 0, offline_batches: 0 };
  private lastKind: 'offline' | 'llm' = 'offline';

  constructor(
    private readonly llm: LoopProposer | undefined,
    private readonly offline: LoopProposer,
    private readonly log: Logger,
  ) {}

  get kind(): 'offline' | 'llm' {
    return this.lastKind;
  }

  async proposeWithKind(req: ProposalRequest): Promise<{ texts: string[]; kind: 'offline' | 'llm' }> {
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
