/**
 * A small OpenAI-compatible chat-completions server for tests: no LLM runs
 * on this machine, so the optimizer's HTTP path is exercised against a real
 * HTTP server whose "model" is a deterministic function of the request.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ChatRequest {
  model?: string;
  messages: Array<{ role: string; content: string }>;
  n?: number;
  temperature?: number;
}

export type Brain = (req: ChatRequest) => string[] | { status: number; body: unknown };

export async function startFakeLlm(brain: Brain): Promise<{ url: string; requests: ChatRequest[]; authorizations: Array<string | undefined>; close(): Promise<void> }> {
  const requests: ChatRequest[] = [];
  /** Each request's Authorization header (undefined: none), in order. */
  const authorizations: Array<string | undefined> = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      if (req.url !== '/v1/chat/completions' || req.method !== 'POST') {
        res.writeHead(404).end('{"error":"not found"}');
        return;
      }
      const parsed = JSON.parse(body) as ChatRequest;
      requests.push(parsed);
      authorizations.push(req.headers.authorization);
      const out = brain(parsed);
      if (!Array.isArray(out)) {
        res.writeHead(out.status, { 'content-type': 'application/json' }).end(JSON.stringify(out.body));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(
        JSON.stringify({
          model: parsed.model ?? 'fake-model',
          choices: out.map((content) => ({ message: { role: 'assistant', content } })),
          usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 },
        }),
      );
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/v1`, requests, authorizations, close: () => new Promise((r) => server.close(() => r())) };
}
