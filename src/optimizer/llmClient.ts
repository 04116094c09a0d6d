/**
 * OpenAI-compatible chat completions over HTTP (vLLM, llama.cpp server,
 * Ollama, OpenAI): the `call_llm` op and the LLM proposer/evaluator use it.
 * Plain `fetch`: one POST with a timeout and the caller's AbortSignal; no
 * SDK needed for one endpoint.
 */

export interface LlmEndpoint {
  /** Base URL, e.g. http://127.0.0.1:8000/v1 (".../chat/completions" is appended). */
  url: string;
  model?: string;
  apiKey?: string;
  timeoutMs?: number;
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface ChatOptions {
  temperature?: number;
  max_tokens?: number;
  top_p?: number;
  n?: number;
  stop?: string[];
}

export interface ChatResult {
  texts: string[];
  model: string;
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
}

export class LlmError extends Error {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'LlmError';
  }
}

interface CompletionBody {
  model?: string;
  choices?: Array<{ message?: { content?: string | null } }>;
  usage?: { prompt_tokens?: number; completion_tokens?: number; total_tokens?: number };
  error?: { message?: string } | string;
}

/** Where an endpoint's chat completions are: its base URL (spaces and trailing slashes aside), then /chat/completions. */
export const completionsUrl = (base: string): string => `${base.trim().replace(/\/+$/, '')}/chat/completions`;

/**
 * A URL as an error or a log may show it: without user, password, query or
 * fragment (where an endpoint's key may be written), and nothing of one that
 * does not parse.
 */
export function urlForMessages(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}${u.username !== '' || u.password !== '' || u.search !== '' || u.hash !== '' ? ' (credentials and query left out)' : ''}`;
  } catch {
    return '(a URL that does not parse)';
  }
}

export async function chat(endpoint: LlmEndpoint, model: string | undefined, messages: ChatMessage[], options: ChatOptions, signal?: AbortSignal): Promise<ChatResult> {
  const url = completionsUrl(endpoint.url);
  const timeout = AbortSignal.timeout(endpoint.timeoutMs ?? 60_000);
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(endpoint.apiKey ? { authorization: `Bearer ${endpoint.apiKey}` } : {}) },
    body: JSON.stringify({ model: model ?? endpoint.model, messages, ...options }),
    signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
  }).catch((err: unknown) => {
    if (signal?.aborted) throw err;
    // The URL as messages may show it (a log, an error reply): the endpoint's own message may repeat it whole.
    const why = (err instanceof Error ? err.message : String(err))
      .replaceAll(url, urlForMessages(url))
      .replaceAll(endpoint.url, urlForMessages(endpoint.url))
      .replace(/\/\/[^\s/@]+@/g, '//***@'); // a URL written another way (normalized) keeps no credentials either
    throw new LlmError(`LLM request to ${urlForMessages(url)} failed: ${why}`);
  });
  const text = await res.text();
  let body: CompletionBody;
  try {
    body = JSON.parse(text) as CompletionBody;
  } catch {
    throw new LlmError(`LLM answered ${res.status} with a non-JSON body`, res.status);
  }
  if (!res.ok) {
    const msg = typeof body.error === 'string' ? body.error : (body.error?.message ?? text.slice(0, 200));
    throw new LlmError(`LLM answered ${res.status}: ${msg}`, res.status);
  }
  const texts = (body.choices ?? []).map((c) => c.message?.content ?? '');
  if (texts.length === 0) throw new LlmError('LLM answered with no choices');
  const u = body.usage ?? {};
  const prompt_tokens = u.prompt_tokens ?? 0;
  const completion_tokens = u.completion_tokens ?? 0;
  return { texts, model: body.model ?? model ?? endpoint.model ?? 'unknown', usage: { prompt_tokens, completion_tokens, total_tokens: u.total_tokens ?? prompt_tokens + completion_tokens } };
}
